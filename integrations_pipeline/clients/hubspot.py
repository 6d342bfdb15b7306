"""HubSpot CRM v3: OAuth spec, raw models, the contacts connector and its pure mapper."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter

from integrations_pipeline.clients.cursors import modified_since, timestamp_cursor
from integrations_pipeline.clients.errors import ProviderError
from integrations_pipeline.clients.http import ApiClient, RetryPolicy
from integrations_pipeline.clients.pagination import CursorPaginator
from integrations_pipeline.clients.spec import AccountInfo, EntitySpec, Page, ProviderSpec, SyncRequest
from integrations_pipeline.records import CONTACT_COLUMNS, ContactRecord
from integrations_pipeline.store import TokenSet

PAGE_LIMIT = 100  # the list endpoint's maximum
SEARCH_PAGE_LIMIT = 100
SEARCH_RESULT_CAP = 10_000  # HubSpot search answers no more than this per query: split the window instead
CONTACT_PROPERTIES = (
    "email",
    "firstname",
    "lastname",
    "phone",
    "company",
    "jobtitle",
    "createdate",
    "lastmodifieddate",
)
LIST_PAGINATOR = CursorPaginator(path=("paging", "next", "after"), param="after")
SEARCH_PAGINATOR = CursorPaginator(path=("paging", "next", "after"), param="after", in_body=True)


class HubSpotObject(BaseModel):
    """Lenient: unknown fields are ignored, property values stay strings as HubSpot sends them."""

    model_config = ConfigDict(extra="ignore")

    id: str
    properties: dict[str, str | None]
    createdAt: datetime | None = None
    updatedAt: datetime
    archived: bool = False
    archivedAt: datetime | None = None


_OBJECTS = TypeAdapter(list[HubSpotObject])


def to_contact(raw: HubSpotObject, connection_id: str) -> ContactRecord:
    properties = raw.properties
    deleted_at = raw.archivedAt if raw.archived else None
    return ContactRecord(
        connection_id=connection_id,
        source_id=raw.id,
        email=properties.get("email"),
        first_name=properties.get("firstname"),
        last_name=properties.get("lastname"),
        phone=properties.get("phone"),
        company=properties.get("company"),
        job_title=properties.get("jobtitle"),
        created_at=raw.createdAt,
        modified_at=max(raw.updatedAt, deleted_at) if deleted_at else raw.updatedAt,
        is_deleted=raw.archived,
    )


def _ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


class HubSpotClient(ApiClient):
    rate_limit_header_prefixes = ("x-hubspot-ratelimit",)

    def __init__(self, api_origin: str, *, auth: httpx.Auth | None = None, retry: RetryPolicy | None = None) -> None:
        super().__init__(api_origin, auth=auth, retry=retry)

    def iter_contacts(self, *, archived: bool = False) -> Iterator[list[HubSpotObject]]:
        """Every live (or every archived) contact, a page at a time."""
        params = [("limit", PAGE_LIMIT), ("archived", "true" if archived else "false")]
        params += [("properties", name) for name in CONTACT_PROPERTIES]
        for page in LIST_PAGINATOR.pages(self, "GET", "/crm/v3/objects/contacts", params=params):
            yield _OBJECTS.validate_python(page.get("results", []))

    def iter_contacts_modified(self, since: datetime, until: datetime) -> Iterator[list[HubSpotObject]]:
        """Live contacts with since <= lastmodifieddate < until, splitting the window wherever a query would
        exceed the search API's 10,000-result cap."""
        pages = SEARCH_PAGINATOR.pages(self, "POST", "/crm/v3/objects/contacts/search", json=self._search(since, until))
        first = next(pages)
        if first.get("total", 0) > SEARCH_RESULT_CAP and until - since > timedelta(milliseconds=1):
            pages.close()
            middle = since + (until - since) / 2
            yield from self.iter_contacts_modified(since, middle)
            yield from self.iter_contacts_modified(middle, until)
            return
        for page in itertools.chain([first], pages):
            yield _OBJECTS.validate_python(page.get("results", []))

    def iter_contacts_archived_since(self, since: datetime) -> Iterator[list[HubSpotObject]]:
        """Contacts archived at or after `since` (the list endpoint has no server-side filter for it)."""
        for page in self.iter_contacts(archived=True):
            recent = [contact for contact in page if contact.archivedAt is None or contact.archivedAt >= since]
            if recent:
                yield recent

    @staticmethod
    def _search(since: datetime, until: datetime) -> dict[str, Any]:
        return {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "lastmodifieddate", "operator": "GTE", "value": _ms(since)},
                        {"propertyName": "lastmodifieddate", "operator": "LT", "value": _ms(until)},
                    ]
                }
            ],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "properties": list(CONTACT_PROPERTIES),
            "limit": SEARCH_PAGE_LIMIT,
        }


def _describe_account(api: ApiClient, access_token: str) -> AccountInfo:
    # The token travels in the path here, so failures are reported without the URL.
    try:
        info = api.get_json(f"/oauth/v1/access-tokens/{access_token}")
    except ProviderError as error:
        raise ProviderError("HubSpot did not describe the new token", status_code=error.status_code) from None
    return AccountInfo(
        external_account_id=str(info["hub_id"]) if "hub_id" in info else None,
        granted_scopes=list(info.get("scopes") or []) or None,
        metadata={"hub_domain": info["hub_domain"]} if info.get("hub_domain") else {},
    )


def _revoke(api: ApiClient, tokens: TokenSet) -> bool:
    if tokens.refresh_token is None:
        return False
    try:
        api.request("DELETE", f"/oauth/v1/refresh-tokens/{tokens.refresh_token.get_secret_value()}")
    except ProviderError:
        return False
    return True


def read_contacts(client: HubSpotClient, request: SyncRequest) -> Iterator[Page]:
    """Full: every live then every archived contact. Incremental: the search API over [since, started_at),
    then contacts archived since (HubSpot's search never returns archived ones)."""
    since = modified_since(request)
    live = client.iter_contacts() if since is None else client.iter_contacts_modified(since, request.started_at)
    archived = client.iter_contacts(archived=True) if since is None else client.iter_contacts_archived_since(since)
    for page in itertools.chain(live, archived):
        yield Page([to_contact(contact, request.connection_id) for contact in page])
    yield Page([], cursor=timestamp_cursor(request.started_at))


SPEC = ProviderSpec(
    name="hubspot",
    display_name="HubSpot",
    authorize_url="https://app.hubspot.com/oauth/authorize",
    token_url="https://api.hubapi.com/oauth/v1/token",
    api_base_url="https://api.hubapi.com",
    default_scopes=("oauth", "crm.objects.contacts.read", "crm.objects.owners.read"),
    sandbox_authorize_path="/oauth/authorize",
    sandbox_token_path="/oauth/v1/token",
    describe_account=_describe_account,
    revoke=_revoke,
    build_client=lambda origin, auth, _metadata: HubSpotClient(origin, auth=auth),
)

ENTITIES = (EntitySpec(provider="hubspot", entity="contacts", columns=CONTACT_COLUMNS, read=read_contacts),)
