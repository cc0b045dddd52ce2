# Shared by scripts/test, scripts/demo and .ci/run: find or install what pgha needs.
# shellcheck shell=bash

# cargo may live in ~/.cargo/bin on a fresh login.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

is_root() { [ "$(id -u)" = 0 ]; }

apt_updated=0
apt_install() {
    # Installs Debian packages, once per run of apt-get update. Root only.
    if ! is_root; then
        echo "missing: $* (install them with: sudo apt-get install -y $*)" >&2
        return 1
    fi
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# PostgreSQL's server binaries (initdb, pg_ctl, postgres, pg_basebackup, pg_controldata).
ensure_postgres() {
    if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        return 0
    fi
    echo "PostgreSQL server binaries not found: installing postgresql-15" >&2
    if is_root; then
        # pgha's tests and demo create their own clusters: do not create and start Debian's.
        mkdir -p /etc/postgresql-common
        if ! grep -q '^create_main_cluster' /etc/postgresql-common/createcluster.conf 2>/dev/null; then
            echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
        fi
    fi
    apt_install postgresql-15 || apt_install postgresql
}

# The programs the routing tests use (issue 5): HAProxy, PgBouncer, iproute2, arping.
ensure_routing_tools() {
    local missing=()
    command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
    command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || missing+=(iproute2)
    command -v arping >/dev/null 2>&1 || [ -x /usr/sbin/arping ] || missing+=(iputils-arping)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

# etcd (issue 13's lease mode): the tests start their own on loopback.
ensure_etcd() {
    command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || apt_install etcd-server
}

# The tests run postgres and pgha as this unprivileged user.
ensure_postgres_user() {
    if ! id postgres >/dev/null 2>&1 && is_root; then
        useradd --system --home-dir /var/lib/postgresql --create-home --shell /bin/bash postgres
    fi
}
