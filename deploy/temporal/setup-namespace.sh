#!/bin/sh
# One-shot (temporalio/admin-tools): create Relay's namespace and register Relay's search
# attributes (relay/core/search_attributes.py) so operators can find runs in the UI.
# Safe to run on every `docker compose up`: existing ones are left as they are.
set -eu

: "${TEMPORAL_ADDRESS:=temporal:7233}"
: "${TEMPORAL_NAMESPACE:=default}"
: "${NAMESPACE_RETENTION:=7d}"
export TEMPORAL_ADDRESS

echo "waiting for Temporal at ${TEMPORAL_ADDRESS}"
until temporal operator cluster health >/dev/null 2>&1; do sleep 2; done

temporal operator namespace describe --namespace "${TEMPORAL_NAMESPACE}" >/dev/null 2>&1 \
    || temporal operator namespace create --namespace "${TEMPORAL_NAMESPACE}" --retention "${NAMESPACE_RETENTION}"

# One attribute per call: some CLI versions register only the first of several --name flags.
for name in RelayUserId RelayIntegrationId RelayProvider RelayEventType RelayEntityId; do
    temporal operator search-attribute create --namespace "${TEMPORAL_NAMESPACE}" --name "${name}" --type Keyword
done
temporal operator search-attribute list --namespace "${TEMPORAL_NAMESPACE}"
