#!/bin/sh
# The "secrets" service of docker-compose.yml: makes the stack's secrets once, random,
# in the volume mounted at /secrets (kept across restarts; `docker compose down -v`
# removes them). Readable by the other services' users (kubegate 10001, Dex 1001), which
# are the only ones that mount the volume.
set -eu
umask 022
cd /secrets
make() {
  if [ ! -s "$1" ]; then
    head -c 32 /dev/urandom | base64 | tr -d '\n/+=' > "$1"
    echo "made $1"
  fi
  chmod 0444 "$1"
}
make signing-key        # kubegate's token signing key (auth.signing_key_file)
make vault-token        # Vault's dev root token, and kubegate's (store.vault.token_file)
make postgres-password  # PostgreSQL's kubegate user
make dex-client-secret  # the OAuth client secret Dex and kubegate share
