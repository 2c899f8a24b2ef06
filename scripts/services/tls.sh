# Sourced by scripts/services.sh: TLS for both servers of every version. At the first start, a
# throwaway CA and a server certificate for DNS:localhost only (EC P-256, 10 years) are made with
# openssl in <state folder>/tls (ca.pem, ca.key, server.pem, server.key). RabbitMQ listens for AMQP
# over TLS on EDC_AMQPS_PORT (verify_peer, a client certificate optional; SASL EXTERNAL with the
# certificate's common name as the user, besides PLAIN and AMQPLAIN); PostgreSQL has ssl = on on its
# one port. The plain listeners stay as they are. Connecting to 127.0.0.1 with host name checks
# fails on purpose: the certificate names localhost only.

tls_ensure() {
    if [ -s "$TLS_DIR/ca.pem" ] && [ -s "$TLS_DIR/server.pem" ] && [ -s "$TLS_DIR/server.key" ]; then
        return 0
    fi
    if ! command -v openssl >/dev/null 2>&1; then
        log "installing openssl with apt-get (it makes the test certificates)"
        apt_install openssl
    fi
    log "making a throwaway CA and a certificate for localhost in $TLS_DIR"
    local tmp=$TLS_DIR.partial
    rm -rf -- "$tmp"
    mkdir -p "$tmp"
    chmod 700 "$tmp"
    (
        cd "$tmp"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
            -subj "/CN=edc-ingest services.sh test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout ca.key -out ca.pem
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=localhost" -keyout server.key -out server.csr
        printf '%s\n' 'subjectAltName=DNS:localhost' 'basicConstraints=critical,CA:FALSE' \
            'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
            -days 3650 -extfile server.ext -out server.pem
        rm -f server.csr server.ext
    ) >/dev/null 2>&1 || die "openssl could not make the test certificates"
    rm -rf -- "$TLS_DIR"
    mv -- "$tmp" "$TLS_DIR"
}

# tls_copy DIR: the CA and the server's certificate and key, copied into a server's state folder
# (PostgreSQL wants its key owned by itself; the Debian 13 root sees only the bound state folders).
tls_copy() {
    tls_ensure
    mkdir -p "$1"
    cp -- "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem" "$TLS_DIR/server.key" "$1/"
    chmod 600 "$1/server.key"
}
