//! `pgha explain`: one or more nodes' journals as an incident report.
