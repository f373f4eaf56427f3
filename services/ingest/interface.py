"""Ingest's published module: the one door of ingest for the other services, the
console, the demo and the CLI (import-linter checks it). It holds no query: each name is
ingest's repository or service function of the same name. Ingest's tables are its own.

Reads (the caller owns the session):

* accounts: :func:`account`, :func:`accounts`, :func:`account_ids`, :func:`account_ids_after` (a step of a
  keyset walk, an :class:`AccountRange`: a query over it filters by its first and last id), :func:`count_accounts`,
  :func:`account_rows`, :func:`account_values` (a few columns only), :func:`accounts_where` (audience
  filters, :class:`AccountFilter`; :func:`admitted_spans`: the same filters at many instants,
  over rows already read), :func:`accounts_with_value` (a rule-language test of one
  column or trait, in SQL when it translates exactly);
  for the console, :func:`search_accounts` (ordered by id, ARR or another service's
  values, such as the current health scores), :func:`total_arr` and :func:`distinct_traits`;
* contacts: :func:`contact`, :func:`contacts`, :func:`users_by_role`, :func:`active_users`, and
  the same two over many accounts in one statement per chunk (:func:`users_by_role_of`,
  :func:`active_users_of`: outreach's enrolment of a whole signal batch); :func:`list_users`
  (a page of an account's users, as the API lists them);
* one account's usage for people to read: :func:`daily_series`, :func:`usage_report`;
* metric series over the daily rollups, one set-based statement per metric over the
  accounts asked for (a list, or every account when ``accounts`` is None), never one
  query per account: :func:`event_counts` (several events at once:
  :func:`event_counts_by_name`), :func:`active_user_counts`,
  :func:`active_days`, :func:`chunked_metric`, :func:`account_last_seen`,
  :func:`events_seen_of` (which of some events each account ever sent),
  :func:`account_last_day`, :func:`daily_usage`, :func:`user_activity_masks`, :func:`event_day_masks`,
  :func:`user_last_seen`; :func:`window_days` (the UTC days of a metric's window);
* metrics over the raw events' properties and over contacts by role, set-based the same
  way: :func:`event_counts_where` (counts with property filters), :func:`contacts_where`
  (distinct contacts who did an event with property filters, ever; :func:`contact_values_where`
  lists them, each with one property's value),
  :func:`property_aggregates` (``sum``/``avg``/``min``/``max``/``latest`` of a numeric
  property, :data:`AGGREGATES`), :func:`role_last_seen`, :func:`role_active_user_counts`,
  :func:`contact_counts`; for backtests, by account and day over a period:
  :func:`daily_counts_where`, :func:`daily_property_stats`, :func:`role_last_seen_by_day`,
  :func:`role_first_seen`;
* stored events: :func:`ingested_event_ids`, :func:`latest_events`,
  :func:`events_between`, :func:`accounts_with_events`, :func:`recent_events`;
* contract outcomes (:class:`ContractOutcomeInfo`, kinds :data:`CONTRACT_KINDS`): one
  account's, newest first (:func:`contract_outcomes`), and every account's over a period
  (:func:`contract_outcomes_between`: what validation of the health model measures against).

Commands (they only flush; the caller owns the transaction):

* :func:`encode_event`: an event another service observed (a click on a mailed link, a
  survey answer) as the record to put on ``product.events`` (topic, key, value),
  validated as ingest will (:class:`EventRefused` for an invalid one): the path a
  product event takes. The caller sends it: through the outbox in its own transaction
  (a survey answer), or straight to the producer (a click, shared.api.SendQueue);

* :func:`set_lifecycle_stage`: a rule's ``set_lifecycle_stage`` action;
* :func:`erase_contact`: scrub a contact's personal data from every ingest table
  (:class:`ErasedContact` says what it removed).

Accounts, contacts and events are returned as frozen snapshots (:class:`AccountInfo`,
:class:`Contact`, :class:`StoredEvent`), so a caller cannot change ingest's state by
assigning to what it read.

For the app: :func:`routers`.
"""

from __future__ import annotations

from fastapi import APIRouter

from services.ingest.accounts.service import (
    ErasedContact,
    daily_series,
    erase_contact,
    set_lifecycle_stage,
    usage_report,
)
from services.ingest.events.publishing import EventRefused, encode_event
from services.ingest.repository.accounts import (
    ACCOUNT_SORTS,
    AccountFilter,
    account,
    account_ids,
    account_ids_after,
    account_rows,
    account_values,
    accounts,
    accounts_where,
    accounts_with_value,
    active_users,
    active_users_of,
    admitted_spans,
    contact,
    contacts,
    count_accounts,
    distinct_traits,
    list_users,
    search_accounts,
    total_arr,
    users_by_role,
    users_by_role_of,
)
from services.ingest.repository.chunks import AccountRange
from services.ingest.repository.contracts import contract_outcomes, contract_outcomes_between
from services.ingest.repository.events import (
    accounts_with_events,
    events_between,
    ingested_event_ids,
    latest_events,
    recent_events,
)
from services.ingest.repository.metrics import (
    account_last_day,
    account_last_seen,
    active_days,
    active_user_counts,
    chunked_metric,
    daily_usage,
    event_counts,
    event_counts_by_name,
    event_day_masks,
    events_seen_of,
    user_activity_masks,
    user_last_seen,
    window_days,
)
from services.ingest.repository.properties import (
    AGGREGATES,
    Where,
    contact_counts,
    contact_values_where,
    contacts_where,
    daily_counts_where,
    daily_property_stats,
    event_counts_where,
    property_aggregates,
    role_active_user_counts,
    role_first_seen,
    role_last_seen,
    role_last_seen_by_day,
)
from services.ingest.repository.search import find_accounts, find_contacts
from services.ingest.snapshots import AccountInfo, Contact, ContractOutcomeInfo, StoredEvent
from shared.events import CONTRACT_KINDS

__all__ = [
    "AGGREGATES",
    "CONTRACT_KINDS",
    "AccountFilter",
    "AccountRange",
    "AccountInfo",
    "Contact",
    "ContractOutcomeInfo",
    "ErasedContact",
    "EventRefused",
    "StoredEvent",
    "Where",
    "account",
    "account_ids",
    "account_ids_after",
    "account_last_day",
    "account_last_seen",
    "account_rows",
    "account_values",
    "accounts",
    "accounts_where",
    "admitted_spans",
    "accounts_with_value",
    "accounts_with_events",
    "active_days",
    "active_user_counts",
    "active_users",
    "active_users_of",
    "chunked_metric",
    "contact",
    "contact_counts",
    "contact_values_where",
    "contacts",
    "contacts_where",
    "contract_outcomes",
    "contract_outcomes_between",
    "count_accounts",
    "daily_counts_where",
    "daily_property_stats",
    "daily_series",
    "daily_usage",
    "distinct_traits",
    "encode_event",
    "erase_contact",
    "event_counts",
    "event_counts_by_name",
    "event_counts_where",
    "event_day_masks",
    "events_between",
    "events_seen_of",
    "find_accounts",
    "find_contacts",
    "ingested_event_ids",
    "latest_events",
    "list_users",
    "property_aggregates",
    "recent_events",
    "role_active_user_counts",
    "role_first_seen",
    "role_last_seen",
    "role_last_seen_by_day",
    "routers",
    "search_accounts",
    "ACCOUNT_SORTS",
    "set_lifecycle_stage",
    "total_arr",
    "usage_report",
    "user_activity_masks",
    "user_last_seen",
    "users_by_role",
    "users_by_role_of",
    "window_days",
]


def routers() -> list[APIRouter]:
    """The ingest API (events, then accounts), in the order the app mounts it (imported
    when the app is built, not by every worker that imports this module)."""
    from services.ingest.accounts.router import router as accounts_router
    from services.ingest.contracts.router import router as contracts_router
    from services.ingest.events.router import router as events_router

    return [events_router, accounts_router, contracts_router]
