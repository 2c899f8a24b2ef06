# Sourced by scripts/services.sh: starting and stopping RabbitMQ nodes (node 1, and nodes 2 and 3
# while clustered), restarting the application (the chaos suite's quick broker restart), and
# stopping every node of a version.

# First half of a start, without waiting: spawn the selected node's VM, or, if the VM runs without
# the application, start_app in the background. Sets R_LAUNCHED to 0 if the node already ran.
R_LAUNCHED=0
declare -a R_STARTAPP_PID=()
rabbit_launch() {
    R_LAUNCHED=0
    rabbit_clear_stale
    rabbit_write_config
    if rabbit_vm_alive; then
        if rabbit_app_running; then
            return 0
        fi
        # Either someone ran stop_app, or the node is still booting (a previous start was
        # interrupted): start_app covers the first (during a boot it returns at once), and
        # rabbit_await then waits in both cases. In the background because a clustered node's
        # start_app may wait for its peers, which must be able to start at the same time.
        log "$R_LABEL: node up (pid $(rabbit_pid)) but application not running: start_app, then wait"
        (rabbit_env && rabbit_run timeout "$START_TIMEOUT" "$RABBIT_BIN/rabbitmqctl" -q start_app) \
            >/dev/null 2>&1 9>&- &
        R_STARTAPP_PID[R_N]=$!
    else
        local p
        for p in "$R_AMQP_PORT" "$R_AMQPS_PORT" "$R_DIST_PORT" "$R_MGMT_PORT"; do
            if port_open "$p"; then
                die "$R_LABEL: port $p on 127.0.0.1 is taken by another process (not our node); stop it or set EDC_AMQP_PORT"
            fi
        done
        log "$R_LABEL: starting node $R_NAME (amqp $R_AMQP_PORT, amqps $R_AMQPS_PORT, dist $R_DIST_PORT, management $R_MGMT_PORT)"
        rabbit_cli rabbitmq-server -detached 9>&-
    fi
    R_LAUNCHED=1
}

# Second half: block until the selected node's application runs. `rabbitmqctl await_startup`
# straight after -detached fails (exit 69); `wait <pidfile>` is reliable. Returns 1, after showing
# the end of the node's log, if it does not run within START_TIMEOUT.
rabbit_await() {
    local ok=1
    rabbit_cli rabbitmqctl -q wait --timeout "$START_TIMEOUT" "$R_PID_FILE" >/dev/null 2>&1 || ok=0
    if [ -n "${R_STARTAPP_PID[R_N]:-}" ]; then
        wait "${R_STARTAPP_PID[R_N]}" || true
        unset 'R_STARTAPP_PID[R_N]'
    fi
    if [ "$ok" = 1 ] && ! port_open "$R_AMQP_PORT"; then
        log "$R_LABEL: node is up but port $R_AMQP_PORT does not accept connections"
        ok=0
    fi
    if [ "$ok" = 0 ]; then
        tail -n 30 "$R_DIR/log/$R_NAME.log" >&2 2>/dev/null || true
        log "$R_LABEL: not running within ${START_TIMEOUT}s (logs: $R_DIR/log)"
        return 1
    fi
}

# rabbit_up N...: start the given nodes together (those running are left alone) and wait for them
# all. Nodes that had to be started are listed in R_LAUNCHED_NODES, those that did not come up in
# R_FAILED.
R_FAILED=()
R_LAUNCHED_NODES=()
rabbit_up() {
    local n t0
    t0=$(now)
    R_LAUNCHED_NODES=()
    for n in "$@"; do
        rabbit_select "$n"
        rabbit_launch
        if [ "$R_LAUNCHED" = 1 ]; then R_LAUNCHED_NODES+=("$n"); fi
    done
    R_FAILED=()
    for n in "${R_LAUNCHED_NODES[@]}"; do
        rabbit_select "$n"
        if rabbit_await; then
            log "$R_LABEL: ready in $(since "$t0") (pid $(rabbit_pid))"
        else
            R_FAILED+=("$n")
        fi
    done
}

# True if node 2 or 3 left state behind: the cluster is up, or was when it was stopped or killed.
rabbit_peers_left() { [ -d "$RABBIT_HOME/rabbit2/mnesia" ] || [ -d "$RABBIT_HOME/rabbit3/mnesia" ]; }

# Start node 1 unless it runs. Nodes 2 and 3, while they are in its cluster, are started with it
# (after `stop` while the cluster was up, a reboot, a killed VM, a stopped application): a clustered
# node that did not stop last waits for its peers at boot, and node 1 must not stay clustered with
# stopped peers.
rabbit_start() {
    local t0 n nodes=(1) node1_alive=0
    t0=$(now)
    rabbit_select 1
    rabbit_clear_stale
    if rabbit_vm_alive; then node1_alive=1; fi
    if rabbit_peers_left; then
        # With node 1 up, the peers it counts as members (not leftovers of an interrupted
        # cluster-down); otherwise every peer with state.
        if [ "$node1_alive" = 1 ]; then rabbit_cluster_view; fi
        for n in 2 3; do
            rabbit_select "$n"
            rabbit_clear_stale
            if { rabbit_vm_alive || [ -d "$R_DIR/mnesia/$R_NAME" ]; } &&
                { [ "$node1_alive" = 0 ] || in_list "$R_NAME" "$CL_ALL"; }; then
                nodes+=("$n")
            fi
        done
    fi
    rabbit_up "${nodes[@]}"
    for n in "${R_FAILED[@]}"; do
        [ "$n" != 1 ] || die "rabbitmq $RABBIT_VERSION: node 1 did not start"
        log "rabbitmq $RABBIT_VERSION: WARNING: node $n did not start (cluster-down removes it)"
    done
    rabbit_select 1
    if [ "${#R_LAUNCHED_NODES[@]}" = 0 ]; then
        log "rabbitmq $RABBIT_VERSION: already running (pid $(rabbit_pid)), amqp port $AMQP_PORT"
    else
        log "rabbitmq $RABBIT_VERSION: running (pid $(rabbit_pid)), amqp port $AMQP_PORT, after $(since "$t0")"
    fi
}

# Stop the selected node's VM. `stop <pidfile>` returns once the VM has exited.
rabbit_stop() {
    local t0 pid
    t0=$(now)
    rabbit_clear_stale
    if ! rabbit_vm_alive; then
        log "$R_LABEL: not running"
        return 0
    fi
    pid=$(rabbit_pid)
    log "$R_LABEL: stopping (pid $pid)"
    if ! rabbit_cli rabbitmqctl -q stop "$R_PID_FILE" >/dev/null 2>&1; then
        log "$R_LABEL: rabbitmqctl stop failed, sending SIGTERM"
        rabbit_kill "$pid"
    fi
    rm -f "$R_PID_FILE"
    log "$R_LABEL: stopped in $(since "$t0")"
}

# SIGTERM the selected node's VM (pid $1), SIGKILL if it is still alive after 30 s.
rabbit_kill() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        rabbit_is_our_vm "$pid" || break
        sleep 0.1
    done
    if rabbit_is_our_vm "$pid"; then
        log "$R_LABEL: still alive after 30s, SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

rabbit_stop_app() {
    rabbit_vm_alive || die "$R_LABEL: node is not running"
    local t0
    t0=$(now)
    rabbit_cli rabbitmqctl -q stop_app
    log "$R_LABEL: application stopped in $(since "$t0")"
}

rabbit_start_app() {
    if ! rabbit_vm_alive; then
        if [ "$R_N" = 1 ]; then die "$R_LABEL: node is not running (use start)"; fi
        die "$R_LABEL: node is not running (use cluster-up)"
    fi
    local t0
    t0=$(now)
    rabbit_cli rabbitmqctl -q start_app
    log "$R_LABEL: application started in $(since "$t0")"
}

# Stop nodes 3, 2 and 1 of the chosen RabbitMQ version. Nodes 2 and 3 first (together: about 9 s
# each when clustered), node 1 last, so that it could boot on its own. They stay members of node
# 1's cluster: `start` starts them again, `cluster-down` removes them.
rabbit_stop_nodes() {
    local n pids=()
    for n in 3 2; do
        rabbit_select "$n"
        rabbit_clear_stale
        if rabbit_vm_alive; then
            rabbit_stop 9>&- &
            pids+=("$!")
        fi
    done
    for n in "${pids[@]}"; do wait "$n"; done
    rabbit_select 1
    rabbit_stop
}

# True if a node of the chosen RabbitMQ version runs.
rabbit_any_alive() {
    local n
    for n in 1 2 3; do
        rabbit_select "$n"
        if rabbit_vm_alive; then return 0; fi
    done
    return 1
}
