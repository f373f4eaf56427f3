"""Outreach, tech-touch: playbooks that turn ``cs.signals`` into templated email,
webhooks and in-app messages, under one contact policy, with holdouts.

Feature folders: ``playbooks/`` (definitions, enrolment consumer, step engine, timers,
holdouts and report), ``templates/`` (sandboxed Jinja2), ``channels/`` (SMTP, webhook),
``inapp/`` (messages the product fetches), ``policy/`` (caps, quiet hours,
suppression, unsubscribe, erasure), ``delivery/`` (the message outbox and its sender),
``devmail/`` (the embedded SMTP sink used by ``make run`` and the tests),
``engagements/`` (pooled CSMs: opening, assignment, time-boxes, outcomes, the pool report),
``starter/`` (the starter templates and playbooks).

Its door is :mod:`services.outreach.interface`: nothing outside outreach imports anything
else of it (docs/architecture.md, "The doors").
"""
