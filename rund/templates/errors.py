"""Why a template cannot be used. Each is a rund error, so callers that do not care see the usual classes."""
from __future__ import annotations

from rund import errors


class TemplateError(errors.RundError):
    """Base of the template store's errors."""


class TemplateMissing(TemplateError, errors.NotFound):
    """No template has been built for this key (yet)."""


class TemplateCorrupt(TemplateError, errors.FailedPrecondition):
    """A template's files do not match its manifest: they changed on disk, or a manifest is unreadable."""


class TemplateBusy(TemplateError, errors.Unavailable):
    """Another process holds the build lock for this key."""


class TemplateBuildFailed(TemplateError, errors.Unavailable):
    """Booting, warming or saving the template VM failed; nothing was published."""
