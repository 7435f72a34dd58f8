#!/bin/sh
# Regenerates the test PKI of test_trust.py (checked in, so the tests need no openssl):
# a CA, a server certificate it signs for 127.0.0.1 and localhost, a client certificate it
# signs (client-auth usage), and a client certificate from another CA ("rogue").
# Valid for 100 years; the keys protect nothing but these tests.
set -eu
cd "$(dirname "$0")"
days=36500
ca() { # name, common name
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days $days \
        -subj "/CN=$2" -keyout "$1-key.pem" -out "$1.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
leaf() { # name, issuer, common name, extensions
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" \
        -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$4" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2-key.pem" -CAcreateserial -days $days \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext" "$2.srl"
}
ca ca "EchoStream test CA"
ca rogue-ca "Rogue CA"
leaf server ca "py-test-server" "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth
basicConstraints=CA:FALSE"
leaf client ca "py-device" "subjectAltName=DNS:py-device.local
extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
leaf rogue rogue-ca "py-rogue" "subjectAltName=DNS:py-rogue.local
extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
rm -f ca-key.pem rogue-ca-key.pem
