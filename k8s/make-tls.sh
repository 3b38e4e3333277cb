#!/usr/bin/env bash
# Makes the Secret spamscope-tls that k8s/base's NATS and Redis and the dev
# overlay's spamscope use: a private certificate authority (ca.crt), the
# servers' certificates (nats.crt/key for clients and routes, redis.crt/key)
# and the client certificate every spamscope role presents (tls.crt/key).
# The authority's key stays in the working directory given (default: a new
# temporary one) and never enters the cluster. Needs openssl and kubectl.
#   k8s/make-tls.sh [dir]
set -euo pipefail
ns=spamscope
dir=${1:-$(mktemp -d)}
cd "$dir"
days=825
openssl req -x509 -newkey rsa:3072 -nodes -keyout ca.key -out ca.crt -days "$days" \
  -subj "/CN=spamscope dev CA" 2>/dev/null
sign() { # name, CN, extensions
  openssl req -newkey rsa:3072 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%b' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" \
    -days "$days" -extfile "$1.ext" 2>/dev/null
}
svc=$ns.svc.cluster.local
sign nats nats "subjectAltName=DNS:nats,DNS:nats.$ns,DNS:nats.$ns.svc,DNS:nats.$svc,DNS:*.nats-cluster,DNS:*.nats-cluster.$ns.svc,DNS:*.nats-cluster.$svc\nextendedKeyUsage=serverAuth,clientAuth\n"
sign redis redis "subjectAltName=DNS:redis,DNS:redis.$ns,DNS:redis.$ns.svc,DNS:redis.$svc,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
sign client spamscope "extendedKeyUsage=clientAuth\n"
kubectl -n "$ns" create secret generic spamscope-tls \
  --from-file=ca.crt --from-file=nats.crt --from-file=nats.key \
  --from-file=redis.crt --from-file=redis.key \
  --from-file=tls.crt=client.crt --from-file=tls.key=client.key
echo "spamscope-tls made; the authority's key is $dir/ca.key (keep it to sign more, or delete it)"
