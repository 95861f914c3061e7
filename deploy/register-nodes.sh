#!/bin/sh
# Register every SuperNode public key in KEYS_DIR with the SuperLink (Flower node auth).
#
#   SUPERLINK_ADDRESS=superlink:9092 CA_CERT=/etc/fedsynth/ca.crt KEYS_DIR=/keys register-nodes.sh
#
# Each KEYS_DIR/NAME.pub (OpenSSH ECDSA public key, as written by deploy/make_certs.py) is
# registered under the name NAME. Idempotent: a key the SuperLink already knows counts as
# done, so the script can run again after every start (the SuperLink keeps registrations in
# its --database; without one they are lost when it restarts).
# Retries while the SuperLink is not reachable yet (RETRIES tries, DELAY seconds apart); any
# other error (an invalid key file, say) fails at once.
# Installed in the fedsynth image as `fedsynth-register-nodes`.
set -eu

: "${SUPERLINK_ADDRESS:?set SUPERLINK_ADDRESS to the SuperLink's HOST:PORT}"
CA_CERT=${CA_CERT:-/etc/fedsynth/ca.crt}
KEYS_DIR=${KEYS_DIR:-/keys}
RETRIES=${RETRIES:-30}
DELAY=${DELAY:-5}
FLWR=${FLWR:-flwr}

# The operator's Flower configuration: one connection named "fedsynth" (in a scratch FLWR_HOME).
FLWR_HOME=$(mktemp -d)
export FLWR_HOME
trap 'rm -rf "$FLWR_HOME"' EXIT
if [ "${INSECURE:-0}" = 1 ]; then
    tls='insecure = true'
else
    [ -r "$CA_CERT" ] || { echo "error: cannot read CA certificate $CA_CERT" >&2; exit 2; }
    tls="root-certificates = \"$CA_CERT\""
fi
cat >"$FLWR_HOME/config.toml" <<EOF
[superlink]
default = "fedsynth"

[superlink.fedsynth]
address = "$SUPERLINK_ADDRESS"
$tls
EOF

found=0
for pub in "$KEYS_DIR"/*.pub; do
    [ -e "$pub" ] || continue
    found=$((found + 1))
    name=$(basename "$pub" .pub)
    try=1
    while :; do
        if out=$("$FLWR" supernode register "$pub" fedsynth --name "$name" 2>&1); then
            echo "$name: registered ($(echo "$out" | tr -s '\n' ' '))"
            break
        fi
        case $out in
            *"already in use"*)
                echo "$name: already registered"
                break ;;
            *unavailable*|*"Connection"*|*"connect"*) ;;  # SuperLink not up yet: retry
            *)
                echo "error: registering $name ($pub) failed:" >&2
                echo "$out" >&2
                exit 1 ;;
        esac
        if [ "$try" -ge "$RETRIES" ]; then
            echo "error: could not register $name after $try tries:" >&2
            echo "$out" >&2
            exit 1
        fi
        echo "$name: SuperLink not ready (try $try/$RETRIES), retrying in ${DELAY}s"
        try=$((try + 1))
        sleep "$DELAY"
    done
done
if [ "$found" -eq 0 ]; then
    echo "error: no *.pub files in $KEYS_DIR" >&2
    exit 2
fi
echo "$found SuperNode key(s) registered with $SUPERLINK_ADDRESS"
