"""Relay's custom search attributes: how operators find runs in the Temporal UI.

Search attributes are stored in the clear (never encrypted), so they carry ids and
type names only: never a secret, an email address or a name.
"""

from temporalio.common import SearchAttributeKey

USER_ID = SearchAttributeKey.for_keyword("RelayUserId")
INTEGRATION_ID = SearchAttributeKey.for_keyword("RelayIntegrationId")
PROVIDER = SearchAttributeKey.for_keyword("RelayProvider")
EVENT_TYPE = SearchAttributeKey.for_keyword("RelayEventType")
ENTITY_ID = SearchAttributeKey.for_keyword("RelayEntityId")

ALL = (USER_ID, INTEGRATION_ID, PROVIDER, EVENT_TYPE, ENTITY_ID)
