#!/usr/bin/env bash
# Makes the certificates of the TLS end-to-end tests with openssl, into the
# folder given as the only argument:
#   ca.pem, ca.key            the test CA
#   server.pem, server.key    poold's certificate (localhost, 127.0.0.1)
#   server2.pem, server2.key  another one of the same names (rotation)
#   app.pem, app.key          a client: URI SAN spiffe://poold.test/app
#   app2.pem, app2.key        another client: spiffe://poold.test/app2
#   ops.pem, ops.key          an operator: spiffe://poold.test/ops
#   other-ca.pem, other-ca.key, stranger.pem, stranger.key
#                             a CA poold does not trust, and a client of it
set -euo pipefail
dir="$1"
cd "${dir}"

ca() {  # name subject
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.pem" -days 2 -subj "$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

leaf() {  # name subject san usage ca
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' \
    "$3" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$5.pem" -CAkey "$5.key" \
    -CAcreateserial -out "$1.pem" -days 2 -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "/CN=poold test CA"
ca other-ca "/CN=some other CA"
leaf server "/CN=poold server one" "DNS:localhost,IP:127.0.0.1" serverAuth ca
leaf server2 "/CN=poold server two" "DNS:localhost,IP:127.0.0.1" serverAuth ca
leaf app "/CN=app" "URI:spiffe://poold.test/app" clientAuth ca
leaf app2 "/CN=app2" "URI:spiffe://poold.test/app2" clientAuth ca
leaf ops "/CN=ops" "URI:spiffe://poold.test/ops" clientAuth ca
leaf stranger "/CN=stranger" "URI:spiffe://elsewhere/x" clientAuth other-ca
