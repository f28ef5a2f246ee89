"""Where endpoint schemas come from, per provider: the `SchemaStore` (aivp_batch.schema_store)
caches and memoises, `EndpointSchema` (aivp_batch.openapi) validates; a source only fetches one
endpoint's OpenAPI document.

- `FalSchemaSource`: fal's public per-endpoint document,
  `{schema_url}/api/openapi/queue/openapi.json?endpoint_id=<id>`, falling back to the platform's
  model search (`{api_url}/v1/models?endpoint_id=<id>&expand=openapi-3.0`). No auth is sent.
- `ReplicateSchemaSource`: `GET {base_url}/v1/models/{owner}/{name}` with the API token (its
  `latest_version.openapi_schema`), or, for an endpoint pinned as `owner/name:<version id>`,
  `GET …/versions/{id}` (that version's `openapi_schema`). The Cog document is rooted at
  `components.schemas.Input` (`providers.replicate.endpoint_document`) so the project's one
  validator applies unchanged. The token is looked up only when a document is fetched, so a run
  with everything in the cache (or `offline=true`) needs none; a missing or refused token is an
  `AuthError` (exit 2, one line), not a reason to fall back to an older copy.

A provider config picks its source with `schema_source:` (a Hydra `_target_` node);
`schema_store.schema_store_for(cfg)` builds the run's store from it (no `schema_source`: fal's, as
always). Nothing here knows the store: it imports this module, never the other way round.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from .errors import AuthError
from .keys import find_key, how_to_set, redact

FAL_SCHEMA_PATH = "/api/openapi/queue/openapi.json"
FAL_MODELS_PATH = "/v1/models"


class SourceUnavailable(Exception):
    """A fetch failed; the text is the one-line reason (never a secret)."""


class SchemaSource(Protocol):
    """Fetches one endpoint's OpenAPI document; raises SourceUnavailable with a one-line reason."""

    # Sub-folder of the store's cache_dir for this source's copies (None: the cache_dir itself).
    cache_namespace: str | None

    def url_for(self, endpoint_id: str) -> str:
        """Where the document is fetched from (shown in messages and kept in the cache index)."""
        ...

    def label(self, endpoint_id: str) -> str:
        """What a freshly fetched document is recorded as having been validated against."""
        ...

    def fetch(self, endpoint_id: str) -> dict:
        """The document, with `paths["/<endpoint_id>"].post.requestBody` naming its input."""
        ...


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _get_json(
    url: str,
    params: dict[str, str] | None,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float,
    transport: httpx.BaseTransport | None,
    secrets: tuple[str | None, ...] = (),
) -> dict:
    try:
        client = httpx.Client(transport=transport, timeout=timeout_s, follow_redirects=True)
        with client:
            response = client.get(url, params=params, headers=headers)
    except httpx.HTTPError as exc:
        raise SourceUnavailable(redact(f"{type(exc).__name__}: {_one_line(exc)}", secrets)) from None
    if response.status_code != 200:
        raise SourceUnavailable(f"HTTP {response.status_code}")
    try:
        document = response.json()
    except ValueError:
        raise SourceUnavailable("the response is not JSON") from None
    if not isinstance(document, dict):
        raise SourceUnavailable("the response is not an OpenAPI document")
    return document


class FalSchemaSource:
    """fal's published documents (public: deliberately no Authorization header, so no key leaks)."""

    cache_namespace: str | None = None  # fal's copies live at the cache's root, as they always have

    def __init__(
        self,
        schema_url: str = "https://fal.ai",
        api_url: str | None = None,
        timeout_s: float = 30,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.schema_url = schema_url.rstrip("/")
        self.api_url = api_url.rstrip("/") if api_url else None
        self.timeout_s = timeout_s
        self.transport = transport

    def url_for(self, endpoint_id: str) -> str:
        return str(httpx.URL(self.schema_url + FAL_SCHEMA_PATH, params={"endpoint_id": endpoint_id}))

    def label(self, endpoint_id: str) -> str:
        return f"live ({self.schema_url})"

    def fetch(self, endpoint_id: str) -> dict:
        """The per-model OpenAPI endpoint; failing that, the platform's model search, which returns
        the same document with `expand=openapi-3.0`."""
        try:
            return self._get(self.schema_url + FAL_SCHEMA_PATH, {"endpoint_id": endpoint_id})
        except SourceUnavailable as first:
            if not self.api_url:
                raise
            params = {"endpoint_id": endpoint_id, "expand": "openapi-3.0"}
            try:
                found = self._get(self.api_url + FAL_MODELS_PATH, params)
                return found["models"][0]["openapi"]
            except (SourceUnavailable, KeyError, IndexError, TypeError):
                raise first from None

    def _get(self, url: str, params: dict[str, str]) -> dict:
        return _get_json(url, params, timeout_s=self.timeout_s, transport=self.transport)


class ReplicateSchemaSource:
    """Replicate's model (or pinned version) objects, read with the API token."""

    cache_namespace: str | None = "replicate"

    def __init__(
        self,
        base_url: str = "https://api.replicate.com",
        token: str | None = None,
        key_env: str | None = "REPLICATE_API_TOKEN",
        timeout_s: float = 30,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.key_env = key_env
        self.timeout_s = timeout_s
        self.transport = transport
        self.versions: dict[str, str] = {}  # endpoint → the version id its fetched document is

    def __repr__(self) -> str:  # never the token
        return f"ReplicateSchemaSource(base_url={self.base_url!r})"

    def _ref(self, endpoint_id: str) -> Any:
        from .errors import RequestFailed
        from .providers.replicate import parse_endpoint

        try:
            return parse_endpoint(endpoint_id)
        except RequestFailed as exc:
            raise SourceUnavailable(str(exc)) from None

    def url_for(self, endpoint_id: str) -> str:
        try:
            ref = self._ref(endpoint_id)
        except SourceUnavailable:
            return f"{self.base_url}/v1/models/{endpoint_id.strip('/')}"
        if ref.version:
            return f"{self.base_url}/v1/models/{ref.model}/versions/{ref.version}"
        return f"{self.base_url}/v1/models/{ref.model}"

    def label(self, endpoint_id: str) -> str:
        version = self.versions.get(endpoint_id)
        return f"live ({self.base_url}" + (f", version {version[:12]})" if version else ")")

    def token(self) -> str:
        """The API token (looked up once, when first needed). AuthError, worded as the run's own
        key check words it, when there is none: no document can be read, so nothing can be run."""
        if not self._token and self.key_env:
            self._token = find_key(self.key_env)
        if not self._token:
            name = self.key_env or "REPLICATE_API_TOKEN"
            raise AuthError(f"no {name} found: {how_to_set(name)}")
        return self._token

    def fetch(self, endpoint_id: str) -> dict:
        from .providers.replicate import endpoint_document

        ref = self._ref(endpoint_id)
        token = self.token()
        headers = {"Authorization": f"Bearer {token}", "User-Agent": "aivp-batch (replicate schemas)"}
        try:
            data = _get_json(
                self.url_for(endpoint_id),
                None,
                headers=headers,
                timeout_s=self.timeout_s,
                transport=self.transport,
                secrets=(token,),
            )
        except SourceUnavailable as exc:
            if str(exc) in ("HTTP 401", "HTTP 403"):
                name = self.key_env or "REPLICATE_API_TOKEN"
                why = f"Replicate rejected the API token ({exc}, reading {ref.model}'s schema)"
                raise AuthError(f"{why}; {how_to_set(name)}") from None
            if str(exc) == "HTTP 404":
                what = f"version {ref.version} of {ref.model}" if ref.version else f"model {ref.model}"
                raise SourceUnavailable(f"HTTP 404: Replicate has no {what}") from None
            raise
        version = data if ref.version else data.get("latest_version")
        schema = version.get("openapi_schema") if isinstance(version, dict) else None
        if not isinstance(schema, dict):
            raise SourceUnavailable("Replicate publishes no openapi_schema for this version")
        if isinstance(version, dict) and version.get("id"):
            self.versions[endpoint_id] = str(version["id"])
        return endpoint_document(schema, endpoint_id)
