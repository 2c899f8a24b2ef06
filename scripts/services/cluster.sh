# Sourced by scripts/services.sh: the RabbitMQ cluster of nodes 1, 2 and 3 (cluster-up,
# cluster-down), for the chaos suite's cluster scenario.

# Node 1's view of its cluster, as " name name ... ": CL_ALL (members) and CL_RUNNING (members whose
# database runs, i.e. with the application started). Node 1's VM must run, its application need not.
CL_ALL=
CL_RUNNING=
rabbit_cluster_view() {
    local out all running
    out=$(rabbit_cli1 rabbitmqctl -q eval \
        '{rabbit_mnesia:cluster_nodes(all), rabbit_mnesia:cluster_nodes(running)}.') ||
        die "rabbitmq: cannot read node 1's cluster status"
    # {[rabbit@localhost,rabbit2@localhost],[rabbit@localhost]}
    out=$(tr -d "{}' \n" <<<"$out")
    all=${out%%],\[*}
    running=${out#*],\[}
    all=${all#[}
    running=${running%]}
    CL_ALL=" ${all//,/ } "
    CL_RUNNING=" ${running//,/ } "
}

CLUSTER_URLS="$(rabbit_amqp_url 1),$(rabbit_amqp_url 2),$(rabbit_amqp_url 3)"

# Start nodes 2 and 3 and join them to node 1's cluster (stop_app, join_cluster, start_app).
# Nodes already in the cluster and running are left alone; a stopped application is started; a
# stopped VM with its state starts back into the cluster; anything else starts afresh and joins.
rabbit_cluster_up() {
    local t0 n launch=() join=()
    t0=$(now)
    rabbit_start
    rabbit_cluster_view
    for n in 2 3; do
        rabbit_select "$n"
        rabbit_clear_stale
        if rabbit_vm_alive; then
            if in_list "$R_NAME" "$CL_RUNNING"; then
                log "$R_LABEL: already in the cluster and running (pid $(rabbit_pid))"
                continue
            fi
            # Application stopped: start_app. Not a member (an interrupted cluster-up): join too.
            if ! in_list "$R_NAME" "$CL_ALL"; then join+=("$n"); fi
        elif ! in_list "$R_NAME" "$CL_ALL" || [ ! -d "$R_DIR/mnesia/$R_NAME" ]; then
            if in_list "$R_NAME" "$CL_ALL"; then
                log "$R_LABEL: member of node 1's cluster, but its state is gone: forget_cluster_node"
                rabbit_cli1 rabbitmqctl -q forget_cluster_node "$R_NAME" >/dev/null
            fi
            rm -rf -- "$R_DIR"
            join+=("$n")
        fi
        launch+=("$n")
    done
    R_BARE_NODES=" ${join[*]} "
    rabbit_up "${launch[@]}"
    [ "${#R_FAILED[@]}" = 0 ] || die "rabbitmq: node(s) ${R_FAILED[*]} did not start"
    R_BARE_NODES=" "
    for n in "${join[@]}"; do
        local tj
        tj=$(now)
        rabbit_select "$n"
        log "$R_LABEL: joining $RABBIT_NODENAME (stop_app, join_cluster, start_app)"
        rabbit_ctl_quiet stop_app
        # (join_cluster logs harmless "Failed to create a tracked connection table" errors)
        rabbit_ctl_quiet join_cluster "$RABBIT_NODENAME"
        rabbit_write_config   # with the management plugin again
        rabbit_ctl_quiet start_app
        log "$R_LABEL: joined in $(since "$tj")"
    done
    rabbit_cluster_view
    for n in 1 2 3; do
        in_list "$(rabbit_node_name "$n")" "$CL_RUNNING" ||
            die "rabbitmq: node $n is not running in node 1's cluster (running:$CL_RUNNING)"
    done
    log "rabbitmq $RABBIT_VERSION: cluster of 3 nodes running ($(since "$t0"))"
}

# Nodes 3 and 2 leave node 1's cluster, stop, and their state is removed; node 1 ends up alone and
# running. Works from any state: rabbit_start starts node 1 if needed, and also the members with a
# stopped application or a dead VM, so that they can hand over their quorum queue replicas and
# leave properly; a member that cannot start is killed and forgotten by node 1.
rabbit_cluster_down() {
    local t0 n peers=0
    t0=$(now)
    rabbit_start
    for n in "${R_FAILED[@]}"; do
        rabbit_select "$n"
        if rabbit_vm_alive; then
            log "$R_LABEL: killing it (node 1 forgets it below)"
            rabbit_kill "$(rabbit_pid)"
        fi
    done
    rabbit_cluster_view
    for n in 2 3; do
        rabbit_select "$n"
        if in_list "$R_NAME" "$CL_ALL" || rabbit_vm_alive || [ -e "$R_DIR" ]; then peers=1; fi
    done
    if [ "$peers" = 0 ]; then
        log "rabbitmq $RABBIT_VERSION: no nodes 2 and 3: node 1 is alone already"
        return 0
    fi

    # Quorum queues: make sure each has a replica on node 1, then remove those on nodes 2 and 3
    # while a peer still runs. A change of members needs a majority: with the peers merely stopped,
    # a queue with replicas on all three nodes would be stuck without a leader on node 1. So the
    # replicas of a member that is down go first, those of running members after.
    if in_list "$(rabbit_node_name 2)" "$CL_RUNNING" || in_list "$(rabbit_node_name 3)" "$CL_RUNNING"; then
        local tq name
        tq=$(now)
        rabbit_queues1 grow "$RABBIT_NODENAME" all
        for n in 3 2; do
            name=$(rabbit_node_name "$n")
            if in_list "$name" "$CL_ALL" && ! in_list "$name" "$CL_RUNNING"; then rabbit_queues1 shrink "$name"; fi
        done
        for n in 3 2; do
            name=$(rabbit_node_name "$n")
            if in_list "$name" "$CL_RUNNING"; then rabbit_queues1 shrink "$name"; fi
        done
        log "rabbitmq $RABBIT_VERSION: quorum queues now on node 1 alone ($(since "$tq"))"
    fi

    # stop_app; reset; stop, one node after the other: a node resetting with a stale view of the
    # cluster (its application stopped while the other node left) adds that node back into node 1's
    # cluster. Only the stop of a node that has left (3.5 s) runs alongside the other's stop_app
    # (5.5 s, spent stopping the management agent).
    local pids=() t1
    for n in 3 2; do
        rabbit_select "$n"
        if rabbit_vm_alive; then
            t1=$(now)
            log "$R_LABEL: leaving the cluster: stop_app, reset, stop"
            rabbit_cli rabbitmqctl -q stop_app >/dev/null 2>&1 || log "$R_LABEL: stop_app failed"
            rabbit_cli rabbitmqctl -q reset >/dev/null 2>&1 || log "$R_LABEL: reset failed (node 1 forgets it below)"
            log "$R_LABEL: left in $(since "$t1")"
            rabbit_stop 9>&- &
            pids+=("$!")
        fi
    done
    for n in "${pids[@]}"; do wait "$n"; done
    rabbit_cluster_view
    for n in 3 2; do
        rabbit_select "$n"
        if in_list "$R_NAME" "$CL_ALL"; then
            log "$R_LABEL: still a member for node 1: forget_cluster_node"
            rabbit_cli1 rabbitmqctl -q forget_cluster_node "$R_NAME" >/dev/null
        fi
        rm -rf -- "$R_DIR"
    done

    rabbit_cluster_view
    [ "$CL_ALL" = " $RABBIT_NODENAME " ] || die "rabbitmq: node 1 is still clustered with:$CL_ALL"
    rabbit_select 1
    rabbit_app_running || die "rabbitmq: node 1's application is not running"
    log "rabbitmq $RABBIT_VERSION: node 1 alone again ($(since "$t0"))"
}

# rabbit_ctl_quiet ARGS...: rabbitmqctl -q ARGS against the selected node; its output is shown only
# if it fails, and then the script stops.
rabbit_ctl_quiet() {
    local out
    out=$(rabbit_cli rabbitmqctl -q "$@" 2>&1) || {
        printf '%s\n' "$out" >&2
        die "$R_LABEL: rabbitmqctl $* failed"
    }
}

# rabbit_queues1 grow|shrink ARGS...: rabbitmq-queues against node 1; problems are only reported.
rabbit_queues1() {
    local out
    if out=$(rabbit_cli1 rabbitmq-queues -q "$@" --errors-only 2>&1); then
        if [ -n "$out" ]; then log "rabbitmq-queues $*: $out"; fi
    else
        log "rabbitmq-queues $* failed: $out"
    fi
}
