#!/bin/sh
# kubegate's entrypoint in docker-compose.yml: puts the PostgreSQL password into the
# connection strings (from the secrets volume, never from the configuration file),
# registers the k3s cluster as cluster 1 of org 1 (once), makes "admin" (token) and
# "dex:admin@example.com" (browser login) its admins, prints a token, then serves.
set -eu
config=/etc/kubegate/compose.toml
kubeconfig=/k3s/kubeconfig.yaml
password=$(cat /secrets/postgres-password)
export KUBEGATE_POLICY__POSTGRES_URL="host=postgres user=kubegate dbname=kubegate password=$password"
export KUBEGATE_AUDIT__POSTGRES_URL="$KUBEGATE_POLICY__POSTGRES_URL"
kubegate --config "$config" check-config
echo "waiting for $kubeconfig from k3s..."
while [ ! -s "$kubeconfig" ]; do sleep 1; done
if ! kubegate --config "$config" cluster list --org 1 | grep -q .; then
  # k3s writes its kubeconfig for 127.0.0.1; inside the compose network it is "k3s"
  sed 's#https://127.0.0.1:6443#https://k3s:6443#' "$kubeconfig" > /tmp/k3s.yaml
  kubegate --config "$config" cluster add --org 1 --name k3s --kubeconfig /tmp/k3s.yaml
  rm -f /tmp/k3s.yaml
  kubegate --config "$config" member add --org 1 --user admin --role admin
  kubegate --config "$config" member add --org 1 --user dex:admin@example.com --role admin
fi
echo "token for user admin:"
kubegate --config "$config" token create --user admin
exec kubegate --config "$config" serve
