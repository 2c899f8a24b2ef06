# Sourced by scripts/services.sh: RabbitMQ nodes, what they are and how to reach them (the version,
# the node's names, ports, folders and environment, its CLI, its state, its configuration).
#
# Node 1 is the node everything uses. Nodes 2 and 3 exist only for cluster tests (cluster.sh). Node
# N is named like node 1 with N appended to the name part (rabbit2@localhost), listens on node 1's
# ports + N-1 (AMQPS: - (N-1)), keeps its state in $RABBIT_HOME/rabbitN and shares node 1's HOME,
# hence its Erlang cookie. Every rabbit_* function works on the node chosen by rabbit_select.
# Starting and stopping them: rabbitmq-nodes.sh.

# Never /usr/sbin/rabbitmqctl: that wrapper switches to the `rabbitmq` user, whose Erlang cookie
# differs from ours. The real scripts below run as root or as any user. The same path in a root.
RABBIT_BIN=/usr/lib/rabbitmq/bin

# rabbit_version V: RabbitMQ V is the one the rabbit_* functions work on. RABBIT_HOME is the
# version's state folder (3.10's is the state folder itself, another's rabbitmq-V/), RABBIT_ROOT
# the Debian root it runs from ("" for this machine's own package, else the release, in
# RABBIT_ROOT_DIR). Returns 1, SRC_WHY saying why, if this machine cannot run V.
rabbit_version() {
    in_list "${1:-}" " $RABBIT_VERSIONS " || die "EDC_RABBITMQ must be one of $RABBIT_VERSIONS, not '${1:-}'"
    source_of rabbitmq "$1" || return 1
    RABBIT_VERSION=$1 RABBIT_ROOT=$SRC_ROOT RABBIT_ROOT_DIR=''
    if [ "$1" = 3.10 ]; then RABBIT_HOME=$SVC_DIR; else RABBIT_HOME=$SVC_DIR/rabbitmq-$1; fi
    if [ -n "$RABBIT_ROOT" ]; then
        root_select "$RABBIT_ROOT"
        RABBIT_ROOT_DIR=$ROOT_DIR
    fi
}

rabbit_node_name() {
    if [ "$1" = 1 ]; then
        printf '%s\n' "$RABBIT_NODENAME"
    elif [[ $RABBIT_NODENAME == *@* ]]; then
        printf '%s\n' "${RABBIT_NODENAME%%@*}$1@${RABBIT_NODENAME#*@}"
    else
        printf '%s\n' "$RABBIT_NODENAME$1"
    fi
}

rabbit_amqp_url() { printf 'amqp://guest:guest@127.0.0.1:%s/%%2f\n' "$((AMQP_PORT + $1 - 1))"; }

# rabbit_select N: point the R_* variables, which every rabbit_* function uses, at node N.
rabbit_select() {
    case ${1:-} in
    1 | 2 | 3) ;;
    *) die "no RabbitMQ node '${1:-}' (1, 2 or 3)" ;;
    esac
    R_N=$1
    R_NAME=$(rabbit_node_name "$1")
    R_AMQP_PORT=$((AMQP_PORT + $1 - 1))
    R_DIST_PORT=$((RABBIT_DIST_PORT + $1 - 1))
    R_MGMT_PORT=$((RABBIT_MGMT_PORT + $1 - 1))
    R_AMQPS_PORT=$((AMQPS_PORT - $1 + 1))
    R_DIR=$RABBIT_HOME/rabbit$1
    R_PID_FILE=$R_DIR/rabbit.pid
    if [ "$1" = 1 ]; then R_LABEL="rabbitmq $RABBIT_VERSION"; else R_LABEL="rabbitmq $RABBIT_VERSION node $1"; fi
}

# Node environment. Server and every CLI call must share HOME (the Erlang cookie is
# $HOME/.erlang.cookie) and the node variables. Call only inside a subshell: it changes HOME.
rabbit_env() {
    export PATH="$RABBIT_BIN:$PATH" HOME="$RABBIT_HOME" RABBITMQ_CONF_ENV_FILE=/dev/null
    export RABBITMQ_NODENAME="$R_NAME"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$R_AMQP_PORT"
    export RABBITMQ_DIST_PORT="$R_DIST_PORT"
    export RABBITMQ_MNESIA_BASE="$R_DIR/mnesia" RABBITMQ_LOG_BASE="$R_DIR/log"
    export RABBITMQ_CONFIG_FILE="$R_DIR/rabbitmq.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$R_DIR/enabled_plugins"
    export RABBITMQ_PID_FILE="$R_PID_FILE"
    # Loopback only: epmd (the Erlang port mapper, started by the first Erlang node or CLI call and
    # shared by all of them; it outlives `stop`), the node's distribution port and the CLI's.
    export ERL_EPMD_ADDRESS=127.0.0.1
    # +sbwt none ...: Erlang's schedulers must not busy-wait. On a small machine shared with
    # PostgreSQL and the daemon, spinning schedulers take the CPU the others need.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none'
    export RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
}

# rabbit_run CMD...: run CMD where the chosen RabbitMQ version is installed (this machine, or its
# Debian root with the version's state folder bound into it).
rabbit_run() {
    if [ -n "$RABBIT_ROOT" ]; then
        in_root "$RABBIT_ROOT_DIR" "$RABBIT_HOME" "$@"
    else
        "$@"
    fi
}

# rabbit_installed: the chosen version's scripts are there.
rabbit_installed() {
    if [ -n "$RABBIT_ROOT" ]; then
        [ -e "$RABBIT_ROOT_DIR/$ROOT_MARK" ] && [ -x "$RABBIT_ROOT_DIR$RABBIT_BIN/rabbitmqctl" ]
    else
        [ -x "$RABBIT_BIN/rabbitmqctl" ]
    fi
}

# rabbit_cli TOOL ARGS...: run /usr/lib/rabbitmq/bin/TOOL with the selected node's environment.
rabbit_cli() {
    local tool=$1
    shift
    (rabbit_env && rabbit_run "$RABBIT_BIN/$tool" "$@")
}

# rabbit_cli1 TOOL ARGS...: the same against node 1, whichever node is selected.
rabbit_cli1() { (rabbit_select 1 && rabbit_cli "$@"); }

rabbit_pid() { [ -s "$R_PID_FILE" ] && tr -d ' \n' <"$R_PID_FILE"; }

# True if pid $1 is the selected node's Erlang VM: its command line names its HOME (the version's
# state folder), and its environment its pid file (all three nodes share that HOME).
rabbit_is_our_vm() {
    local environ
    pid_is "$1" "-home $RABBIT_HOME " || return 1
    environ=$(tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null) || return 1
    grep -qxF -- "RABBITMQ_PID_FILE=$R_PID_FILE" <<<"$environ"
}

# True if the selected node's Erlang VM runs (whatever the state of the rabbit application in it).
rabbit_vm_alive() {
    local pid
    pid=$(rabbit_pid) || return 1
    rabbit_is_our_vm "$pid"
}

# True if the rabbit application is up and serving.
rabbit_app_running() { rabbit_cli rabbitmq-diagnostics -q check_running >/dev/null 2>&1; }

rabbit_clear_stale() {
    if [ -e "$R_PID_FILE" ] && ! rabbit_vm_alive; then
        log "$R_LABEL: removing stale pid file $R_PID_FILE"
        rm -f "$R_PID_FILE"
    fi
}

rabbit_write_config() {
    mkdir -p "$R_DIR/log" "$R_DIR/mnesia"
    tls_copy "$R_DIR/tls"
    cat >"$R_DIR/rabbitmq.conf" <<CONF
# written by scripts/services.sh on every start
management.tcp.ip = 127.0.0.1
management.tcp.port = $R_MGMT_PORT
listeners.ssl.1 = 127.0.0.1:$R_AMQPS_PORT
ssl_options.cacertfile = $R_DIR/tls/ca.pem
ssl_options.certfile = $R_DIR/tls/server.pem
ssl_options.keyfile = $R_DIR/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
CONF
    # A fresh node that is to join the cluster boots without plugins: stop_app takes 0.7 s instead
    # of 5.5 s without the management agent. start_app after join_cluster reads the file again.
    if in_list "$R_N" "$R_BARE_NODES"; then
        echo '[].' >"$R_DIR/enabled_plugins"
    else
        echo '[rabbitmq_management,rabbitmq_auth_mechanism_ssl].' >"$R_DIR/enabled_plugins"
    fi
}
R_BARE_NODES=" "
