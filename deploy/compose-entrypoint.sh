#!/bin/sh
# Registers the k3s cluster of docker-compose.yml as cluster 1 of org 1 (once), makes
# "admin" its admin, prints a token for them, then serves.
set -eu
config=/etc/kubegate/compose.toml
kubeconfig=/k3s/kubeconfig.yaml
echo "waiting for $kubeconfig from k3s..."
while [ ! -s "$kubeconfig" ]; do sleep 1; done
if ! kubegate --config "$config" cluster list --org 1 | grep -q .; then
  # k3s writes its kubeconfig for 127.0.0.1; inside the compose network it is "k3s"
  sed 's#https://127.0.0.1:6443#https://k3s:6443#' "$kubeconfig" > /tmp/k3s.yaml
  kubegate --config "$config" cluster add --org 1 --name k3s --kubeconfig /tmp/k3s.yaml
  rm -f /tmp/k3s.yaml
  kubegate --config "$config" member add --org 1 --user admin --role admin
fi
echo "token for user admin:"
kubegate --config "$config" token create --user admin
exec kubegate --config "$config" serve
