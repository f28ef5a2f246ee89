"""The exception hierarchy of aivp-batch.

    AivpError                      every error this package raises on purpose
    ├── InputError                 the user's input is wrong; nothing was spent
    │   ├── StoryboardError        a shot file / manifest can't be understood (names the file)
    │   ├── ConfigError            a config value or model/provider choice is wrong
    │   └── PayloadInvalid         a payload fails its endpoint's schema (names shot, endpoint, field)
    ├── SchemaUnavailable          an endpoint's OpenAPI document can't be fetched or read
    ├── BudgetExceeded             a job would pass the run's budget; it was not submitted
    ├── MediaError                 a video file is missing, undecodable or the wrong length
    └── ProviderError              the provider refused or failed a request
        ├── AuthError              missing or rejected API key (says how to set it)
        ├── RequestFailed          a final, non-retryable failure of one request (model error, 422…)
        └── TransientError         retryable: 429, ingress 5xx, transport errors (retries exhausted)
            └── SubmitNotAccepted  a submit that surely never reached the provider (safe to resubmit)

Every message is one line a user can act on, and never carries a secret.
"""

from __future__ import annotations

# The command's exit statuses: every selected clip done / some clip failed / bad input, nothing spent.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class AivpError(Exception):
    """Base class of every deliberate aivp-batch error."""


class InputError(AivpError):
    """The user's input is wrong. Raised before anything is spent."""


class StoryboardError(InputError):
    def __init__(self, file: str, message: str) -> None:
        self.file = file
        self.detail = message
        super().__init__(f"{file}: {message}")


class ConfigError(InputError):
    pass


class PayloadInvalid(InputError):
    pass


class SchemaUnavailable(AivpError):
    pass


class BudgetExceeded(AivpError):
    pass


class MediaError(AivpError):
    pass


class ProviderError(AivpError):
    pass


class AuthError(ProviderError):
    pass


class RequestFailed(ProviderError):
    """`may_be_billed`: the request had started when it ended (e.g. cancelled on a client timeout)."""

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        status_code: int | None = None,
        may_be_billed: bool = False,
    ) -> None:
        self.request_id = request_id
        self.status_code = status_code
        self.may_be_billed = may_be_billed
        super().__init__(message)


class TransientError(ProviderError):
    pass


class SubmitNotAccepted(TransientError):
    pass
