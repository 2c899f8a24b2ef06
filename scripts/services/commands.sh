# Sourced by scripts/services.sh: the subcommands that act on both servers (start, stop, status,
# env, install, cluster-up, cluster-down).

print_urls() {
    printf '%s\n' "$AMQP_URL" "$PG_URL"
}

cmd_start() {
    local t0
    t0=$(now)
    take_lock
    ensure_installed
    stop_other_versions
    rabbit_start
    pg_start
    pg_ensure_db
    log "all services ready ($(since "$t0") in total); state in $SVC_DIR"
    print_urls
}

# Install what the chosen versions need (this machine's packages, a Debian root), start nothing.
cmd_install() {
    take_lock
    need_root "install"
    ensure_installed
    log "installed: RabbitMQ $RABBIT_VERSION ($(version_label rabbitmq-server "$RABBIT_ROOT")), PostgreSQL $PG_VERSION ($(version_label "postgresql-$PG_VERSION" "$PG_ROOT"))"
}

cmd_env() {
    printf "export EDC__AMQP__URL='%s'\n" "$AMQP_URL"
    printf "export EDC__POSTGRES__URL='%s'\n" "$PG_URL"
    printf "export EDC_TEST_AMQP_URL='%s'\n" "$AMQP_URL"
    printf "export EDC_TEST_PG_URL='%s'\n" "$PG_URL"
    printf "export EDC_TEST_MANAGEMENT_PORT='%s'\n" "$RABBIT_MGMT_PORT"
    printf "export EDC_TEST_CLUSTER_URLS='%s'\n" "$CLUSTER_URLS"
    printf "export EDC_RABBITMQ='%s'\n" "$RABBIT_VERSION"
    printf "export EDC_POSTGRES='%s'\n" "$PG_VERSION"
    printf "export EDC_TEST_TLS_DIR='%s'\n" "$TLS_DIR"
    printf "export EDC_TEST_AMQPS_URL='%s'\n" "$AMQPS_URL"
    printf "export EDC_TEST_PG_RUNTIME_URL='%s'\n" "$PG_RUNTIME_URL"
}

# Both versions of each server use the same ports: before starting the chosen ones, stop the other
# versions' servers of this state folder, if they run.
stop_other_versions() {
    local v chosen=$RABBIT_VERSION
    for v in $RABBIT_VERSIONS; do
        [ "$v" != "$chosen" ] || continue
        (
            rabbit_version "$v" || exit 0
            if rabbit_installed && rabbit_any_alive; then
                log "rabbitmq $v runs on this state folder: stopping it first (the versions share the ports)"
                rabbit_stop_nodes
            fi
        )
    done
    chosen=$PG_VERSION
    for v in $PG_VERSIONS; do
        [ "$v" != "$chosen" ] || continue
        (
            pg_version "$v" || exit 0
            if pg_installed && pg_alive; then
                log "postgres $v runs on this state folder: stopping it first (the versions share the port)"
                pg_stop fast
            fi
        )
    done
}

# Every server of this state folder, whichever its version.
cmd_stop() {
    local v rabbit=$RABBIT_VERSION pg=$PG_VERSION
    take_lock
    for v in $RABBIT_VERSIONS; do
        (
            rabbit_version "$v" || exit 0
            if rabbit_installed && { [ "$v" = "$rabbit" ] || rabbit_any_alive; }; then
                rabbit_stop_nodes
            fi
        )
    done
    for v in $PG_VERSIONS; do
        (
            pg_version "$v" || exit 0
            if pg_installed && { [ "$v" = "$pg" ] || pg_alive; }; then pg_stop fast; fi
        )
    done
}

cmd_cluster_up() {
    take_lock
    ensure_installed
    rabbit_cluster_up
    printf '%s\n' "$CLUSTER_URLS"
}

cmd_cluster_down() {
    take_lock
    ensure_installed
    rabbit_cluster_down
}

# version_label PACKAGE ROOT: "3.10.8-1.1+deb12u1" and where from, or "not installed".
version_label() {
    local v
    v=$(installed_version "$1" "$2")
    if [ -z "$v" ]; then
        echo "not installed"
    elif [ -n "$2" ]; then
        root_select "$2"
        echo "$v, in the $ROOT_LABEL root"
    else
        echo "$v"
    fi
}

cmd_status() {
    local ok=0 n
    echo "state folder: $SVC_DIR"
    echo "versions:     RabbitMQ $RABBIT_VERSION ($(version_label rabbitmq-server "$RABBIT_ROOT")), PostgreSQL $PG_VERSION ($(version_label "postgresql-$PG_VERSION" "$PG_ROOT"))"
    rabbit_select 1
    if rabbit_installed && rabbit_vm_alive; then
        if rabbit_app_running; then
            echo "$R_LABEL: running (pid $(rabbit_pid)) $AMQP_URL  management http://127.0.0.1:$RABBIT_MGMT_PORT/"
        else
            echo "$R_LABEL: node up (pid $(rabbit_pid)) but application STOPPED (run rabbit-start-app)"
            ok=3
        fi
    else
        echo "$R_LABEL: stopped"
        ok=3
    fi
    # Nodes 2 and 3 only if they exist (they do not count for the exit status).
    for n in 2 3; do
        rabbit_select "$n"
        if rabbit_installed && rabbit_vm_alive; then
            if rabbit_app_running; then
                echo "$R_LABEL: running (pid $(rabbit_pid)) $(rabbit_amqp_url "$n")  node $R_NAME"
            else
                echo "$R_LABEL: node up (pid $(rabbit_pid)) but application STOPPED (run rabbit-node-start $n)"
            fi
        elif [ -d "$R_DIR" ]; then
            echo "$R_LABEL: stopped, state kept in $R_DIR (cluster-up starts it, cluster-down removes it)"
        fi
    done
    if pg_installed && [ -d "$PG_DATA" ] && pg_alive; then
        if pg_ready; then
            echo "postgres $PG_VERSION: running (pid $(pg_postmaster_pid)) $PG_URL"
        else
            echo "postgres $PG_VERSION: process up (pid $(pg_postmaster_pid)) but NOT accepting connections"
            ok=3
        fi
    else
        echo "postgres $PG_VERSION: stopped"
        ok=3
    fi
    return "$ok"
}
