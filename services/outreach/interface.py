"""The outreach service's one door: the only module of outreach that the console, the
demo, the jobs list and the CLI may import (import-linter checks it; no other service
imports outreach, docs/architecture.md "The doors"). It holds no queries: every name is
an outreach repository's or service's own function, published here under the name
callers use.

- Decisions and holdouts (:mod:`services.outreach.outcomes`): ``signals_with_decision``,
  ``holdout_groups``.
- Playbooks: heads, versions, enrolments, report, funnel, save, the definition and its
  step types (the console draws the flow), ``outreach_status`` (the demo's live stream).
- Templates: list, read, preview, save.
- Messages: lists, counts.
- Engagements and the CSM roster: reads, the actions a CSM or CS Ops takes (emailing a
  contact through the contact gate and the outbox among them), the pool report and forecast.
- The content library: list, read, parse (the API's validation), save, delete, import from
  YAML or CSV (a file, or its text).
- Surveys: a survey's results (``survey_results``: NPS or CSAT, overall and by day), the
  surveys answered (``list_surveys``).
- Broadcasts (a template to a segment's members, now or later): parse, preview, create,
  cancel, list, read, report.
- Measured: a resource's and a survey's report against the holdout (``resource_report``,
  ``survey_report``).
- The contact gate's quiet hours (``quiet_until``: the demo names contacts it can reach now).
- Starter content, the development mail sink, and :func:`routers` for the app.

Everything reads or flushes only; the caller owns the session and the transaction.
"""

from __future__ import annotations

from fastapi import APIRouter

from services.outreach.broadcasts.repository import as_dict as broadcast_out
from services.outreach.broadcasts.repository import list_broadcasts
from services.outreach.broadcasts.schemas import STATUSES as BROADCAST_STATUSES
from services.outreach.broadcasts.schemas import BroadcastIn, parse_broadcast
from services.outreach.broadcasts.schemas import Preview as BroadcastPreview
from services.outreach.broadcasts.schemas import Report as BroadcastReport
from services.outreach.broadcasts.service import cancel as cancel_broadcast
from services.outreach.broadcasts.service import create as create_broadcast
from services.outreach.broadcasts.service import get_or_404 as get_broadcast
from services.outreach.broadcasts.service import new_id as new_broadcast_id
from services.outreach.broadcasts.service import preview as preview_broadcast
from services.outreach.broadcasts.service import report as broadcast_report
from services.outreach.content.importer import ImportOutcome as ResourceImportOutcome
from services.outreach.content.importer import import_resources, import_resources_text
from services.outreach.content.repository import list_resources
from services.outreach.content.schemas import GOALS as RESOURCE_GOALS
from services.outreach.content.schemas import ID_PATTERN as RESOURCE_ID_PATTERN
from services.outreach.content.schemas import KINDS as RESOURCE_KINDS
from services.outreach.content.schemas import ROLES as RESOURCE_ROLES
from services.outreach.content.schemas import TAGS as RESOURCE_TAGS
from services.outreach.content.schemas import ResourceIn, parse_resource
from services.outreach.content.service import delete as delete_resource
from services.outreach.content.service import get_or_404 as get_resource
from services.outreach.content.service import save as save_resource
from services.outreach.delivery.repository import MESSAGE_SORTS, count_messages, list_messages
from services.outreach.delivery.repository import counts_by_state_reason as message_counts_by_state_reason
from services.outreach.delivery.repository import get as get_message
from services.outreach.devmail.sink import serve_forever as serve_devmail
from services.outreach.engagements.assignment import reassign as reassign_engagement
from services.outreach.engagements.email import send_email as email_contact
from services.outreach.engagements.reporting import detail as engagement_detail
from services.outreach.engagements.reporting import forecast as pool_forecast
from services.outreach.engagements.reporting import outcomes as engagement_outcomes
from services.outreach.engagements.reporting import pool as pool_report
from services.outreach.engagements.repository import (
    ENGAGEMENT_SORTS,
    accounts_engaged_by,
    find_engagements,
    get_csm,
    list_csms,
    list_engagements,
)
from services.outreach.engagements.repository import due_counts as engagement_due_counts
from services.outreach.engagements.repository import get as get_engagement
from services.outreach.engagements.repository import open_load as csm_open_load
from services.outreach.engagements.roster import patch as patch_csm
from services.outreach.engagements.roster import preview_patch as preview_csm_patch
from services.outreach.engagements.roster import put as put_csm
from services.outreach.engagements.schemas import GOALS as ENGAGEMENT_GOALS
from services.outreach.engagements.schemas import OUTCOMES as ENGAGEMENT_OUTCOMES
from services.outreach.engagements.schemas import STATUSES as ENGAGEMENT_STATUSES
from services.outreach.engagements.schemas import (
    TOUCH_KINDS,
    CancelIn,
    CsmIn,
    CsmPatch,
    ExtendIn,
    NoteIn,
    OpenIn,
    ReassignIn,
    ResolveIn,
    TouchIn,
    WorkingHours,
)
from services.outreach.engagements.service import accept as accept_engagement
from services.outreach.engagements.service import add_note, log_touch
from services.outreach.engagements.service import cancel as cancel_engagement
from services.outreach.engagements.service import extend as extend_engagement
from services.outreach.engagements.service import open_by_hand as open_engagement_by_hand
from services.outreach.engagements.service import resolve as resolve_engagement
from services.outreach.engagements.service import visible_to as engagement_visible_to
from services.outreach.engagements.timebox import reminder_due as engagement_reminder_due
from services.outreach.measured.service import ResourceReport, SurveyReport, resource_report, survey_report
from services.outreach.models import OPEN_ENGAGEMENT_STATUSES, Engagement, Message, Template
from services.outreach.outcomes import holdout_groups, signals_with_decision
from services.outreach.playbooks.engine import DryRun as PlaybookDryRun
from services.outreach.playbooks.repository import (
    ENROLLMENT_SORTS,
    count_enrollments,
    enrollments_for_account,
    find_enrollments,
    outreach_status,
)
from services.outreach.playbooks.repository import get_head as get_playbook_head
from services.outreach.playbooks.repository import get_version as get_playbook_version
from services.outreach.playbooks.repository import list_enrollments as list_playbook_enrollments
from services.outreach.playbooks.repository import list_heads as list_playbook_heads
from services.outreach.playbooks.router import parse_definition as parse_playbook_definition
from services.outreach.playbooks.schemas import ID_PATTERN as PLAYBOOK_ID_PATTERN
from services.outreach.playbooks.schemas import PlaybookDefinition
from services.outreach.playbooks.service import dry_run as dry_run_playbook
from services.outreach.playbooks.service import funnel as playbook_funnel
from services.outreach.playbooks.service import get_or_404 as get_playbook
from services.outreach.playbooks.service import out as playbook_out
from services.outreach.playbooks.service import report as playbook_report
from services.outreach.playbooks.service import report_by_segment as playbook_report_by_segment
from services.outreach.playbooks.service import save as save_playbook
from services.outreach.playbooks.steps.definitions import BranchStep, EndStep, RecommendStep, SendStep, WaitStep
from services.outreach.policy.service import quiet_until
from services.outreach.starter import ACTOR as STARTER_ACTOR
from services.outreach.starter import seed_starter_content, starter_playbooks
from services.outreach.surveys.repository import surveys as list_surveys
from services.outreach.surveys.service import results as survey_results
from services.outreach.templates.rendering import PARTS as TEMPLATE_PARTS
from services.outreach.templates.repository import get as find_template
from services.outreach.templates.repository import list_all as list_templates
from services.outreach.templates.schemas import ID_PATTERN as TEMPLATE_ID_PATTERN
from services.outreach.templates.schemas import TemplateIn
from services.outreach.templates.service import get_or_404 as get_template
from services.outreach.templates.service import preview_for as template_preview
from services.outreach.templates.service import save as save_template

__all__ = [
    "BROADCAST_STATUSES",
    "BroadcastIn",
    "BroadcastPreview",
    "BroadcastReport",
    "broadcast_out",
    "broadcast_report",
    "cancel_broadcast",
    "create_broadcast",
    "get_broadcast",
    "list_broadcasts",
    "new_broadcast_id",
    "parse_broadcast",
    "preview_broadcast",
    "ResourceReport",
    "quiet_until",
    "SurveyReport",
    "resource_report",
    "ENGAGEMENT_GOALS",
    "ENGAGEMENT_OUTCOMES",
    "ENGAGEMENT_STATUSES",
    "OPEN_ENGAGEMENT_STATUSES",
    "STARTER_ACTOR",
    "TEMPLATE_PARTS",
    "TOUCH_KINDS",
    "BranchStep",
    "CancelIn",
    "CsmIn",
    "EndStep",
    "Engagement",
    "ExtendIn",
    "Message",
    "NoteIn",
    "OpenIn",
    "PLAYBOOK_ID_PATTERN",
    "PlaybookDefinition",
    "PlaybookDryRun",
    "ReassignIn",
    "RecommendStep",
    "ResourceImportOutcome",
    "ResourceIn",
    "ResolveIn",
    "SendStep",
    "Template",
    "TEMPLATE_ID_PATTERN",
    "TemplateIn",
    "TouchIn",
    "WaitStep",
    "accept_engagement",
    "accounts_engaged_by",
    "add_note",
    "cancel_engagement",
    "count_messages",
    "engagement_detail",
    "engagement_due_counts",
    "engagement_visible_to",
    "enrollments_for_account",
    "extend_engagement",
    "email_contact",
    "find_engagements",
    "get_csm",
    "get_engagement",
    "get_message",
    "dry_run_playbook",
    "get_playbook",
    "get_resource",
    "get_playbook_head",
    "get_playbook_version",
    "find_template",
    "get_template",
    "holdout_groups",
    "import_resources",
    "list_csms",
    "list_engagements",
    "list_messages",
    "list_playbook_enrollments",
    "list_playbook_heads",
    "list_resources",
    "list_surveys",
    "list_templates",
    "engagement_outcomes",
    "log_touch",
    "open_engagement_by_hand",
    "message_counts_by_state_reason",
    "outreach_status",
    "parse_playbook_definition",
    "playbook_funnel",
    "playbook_out",
    "playbook_report",
    "playbook_report_by_segment",
    "pool_forecast",
    "pool_report",
    "put_csm",
    "CsmPatch",
    "ENROLLMENT_SORTS",
    "engagement_reminder_due",
    "ENGAGEMENT_SORTS",
    "MESSAGE_SORTS",
    "count_enrollments",
    "find_enrollments",
    "WorkingHours",
    "preview_csm_patch",
    "patch_csm",
    "csm_open_load",
    "reassign_engagement",
    "resolve_engagement",
    "first_routers",
    "routers",
    "save_playbook",
    "save_resource",
    "survey_report",
    "survey_results",
    "save_template",
    "seed_starter_content",
    "serve_devmail",
    "signals_with_decision",
    "starter_playbooks",
    "template_preview",
    "import_resources_text",
    "RESOURCE_GOALS",
    "RESOURCE_ID_PATTERN",
    "RESOURCE_KINDS",
    "RESOURCE_ROLES",
    "RESOURCE_TAGS",
    "parse_resource",
    "delete_resource",
]


def first_routers() -> list[APIRouter]:
    """The routers the app mounts before every other: the tracked-link redirect
    (``GET /r/{token}``), the API's busiest public route (every click of every mail).
    Starlette tries routes in order, one path match each: mounted among the others it was
    tried after some 200 routes, about half of the app's CPU per redirect (cProfile of
    the app under ``bench.bench_content``'s redirect part)."""
    from services.outreach.links.router import router as links_router

    return [links_router]


def routers() -> list[APIRouter]:
    """The outreach API, in the order the app mounts it (imported when the app is
    built, not by every process that imports this module)."""
    from services.outreach.broadcasts.router import router as broadcasts_router
    from services.outreach.content.router import router as content_router
    from services.outreach.delivery.router import router as messages_router
    from services.outreach.devmail.router import router as devmail_router
    from services.outreach.engagements.router import router as engagements_router
    from services.outreach.inapp.router import router as inapp_router
    from services.outreach.measured.router import router as measured_router
    from services.outreach.playbooks.router import router as playbooks_router
    from services.outreach.policy.router import router as policy_router
    from services.outreach.surveys.router import router as surveys_router
    from services.outreach.templates.router import router as templates_router

    return [
        templates_router,
        playbooks_router,
        messages_router,
        inapp_router,
        policy_router,
        surveys_router,
        engagements_router,
        content_router,
        broadcasts_router,
        measured_router,
        devmail_router,
    ]
