"""Request and response models of the REST API (they make the OpenAPI document).

Rules for this module: field names are the original Oba's JSON names (camelCase); request models
forbid unknown keys so a typo is a 422, never silently ignored. Attribute values travel as
strings; a value that is not UTF-8 is sent base64-encoded under the key ``<name>;base64``, and
that key is accepted on input too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from oba.acl.document import AclRule, Policy


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------- public


class HealthResponse(BaseModel):
    status: str = Field(description="ok")
    version: str
    uptime: str = Field(description="Uptime as text, e.g. 1h2m3s.")
    uptimeSecs: int
    startTime: str = Field(description="RFC 3339 start time.")
    connections: int = Field(description="Open LDAP connections.")
    requests: int = Field(description="Requests served (LDAP operations + REST requests).")


class BindRequest(_Request):
    dn: str = Field(min_length=1, description="Bind DN.")
    password: str = Field(min_length=1)


class BindResponse(BaseModel):
    success: bool
    token: str = Field(description="HS256 JWT {dn, iat, exp}: send as Authorization: Bearer.")
    expiresAt: int = Field(description="Expiry, seconds since the epoch.")


class PublicConfigResponse(BaseModel):
    baseDN: str


# ---------------------------------------------------------------- stats


class StorageStats(BaseModel):
    entryCount: int
    databaseSizeBytes: int
    mapSizeBytes: int
    pageSize: int
    usedPages: int
    readers: int
    maxReaders: int


class SecurityStats(BaseModel):
    lockedAccounts: int
    disabledAccounts: int
    failedLogins24h: int


class SystemStats(BaseModel):
    pid: int
    python: str
    threads: int
    maxRSSBytes: int
    numCPU: int


class StatsResponse(HealthResponse):
    timezone: str
    storage: StorageStats | None = Field(
        default=None, description="Root DN only (everyone under the built-in policy).")
    security: SecurityStats | None = Field(
        default=None, description="Root DN only (everyone under the built-in policy).")
    system: SystemStats
    operations: dict[str, int] | None = Field(
        default=None, description="Operations served, by type. Root DN only (everyone under "
        "the built-in policy).")


class Activity(BaseModel):
    timestamp: str
    type: str
    user: str
    message: str
    source: str


class ActivitiesResponse(BaseModel):
    activities: list[Activity]
    count: int


# ---------------------------------------------------------------- entries

Attributes = dict[str, list[str]]


class EntryModel(BaseModel):
    dn: str
    attributes: Attributes


class EntryCreate(_Request):
    dn: str = Field(description="DN of the new entry.")
    attributes: Attributes = Field(description="Attribute name → values.")


class Change(_Request):
    operation: Literal["add", "delete", "replace"]
    attribute: str = Field(min_length=1)
    values: list[str] = Field(default_factory=list)


class ModifyRequest(_Request):
    changes: list[Change] = Field(min_length=1)


class MoveRequest(_Request):
    newRDN: str = Field(min_length=1)
    deleteOldRDN: bool = True
    newSuperior: str | None = None


class DisableResponse(BaseModel):
    success: bool
    disabled: bool


class UnlockResponse(BaseModel):
    success: bool
    locked: bool


class LockStatusResponse(BaseModel):
    dn: str
    locked: bool


class SearchResponse(BaseModel):
    entries: list[EntryModel]
    totalCount: int
    offset: int
    limit: int
    hasMore: bool


class BulkOperation(_Request):
    operation: Literal["add", "modify", "delete"]
    dn: str
    attributes: Attributes | None = Field(default=None, description="For add.")
    changes: list[Change] | None = Field(default=None, description="For modify.")


class BulkRequest(_Request):
    stopOnError: bool = False
    operations: list[BulkOperation] = Field(min_length=1, max_length=1000)


class BulkResult(BaseModel):
    index: int
    dn: str
    operation: str
    success: bool
    error: str | None = None
    message: str | None = None
    resultCode: int | None = None


class BulkResponse(BaseModel):
    success: bool
    totalCount: int
    succeeded: int
    failed: int
    results: list[BulkResult]


class CompareRequest(_Request):
    dn: str
    attribute: str = Field(min_length=1)
    value: str


class CompareResponse(BaseModel):
    match: bool


# ---------------------------------------------------------------- acl


class AclStats(BaseModel):
    ruleCount: int
    lastReload: str | None
    reloadCount: int
    filePath: str | None


class AclResponse(BaseModel):
    defaultPolicy: Policy
    rules: list[AclRule]
    stats: AclStats


class AclRulesResponse(BaseModel):
    rules: list[AclRule]
    count: int


class AclRuleAdd(_Request):
    rule: dict[str, Any] = Field(description="The rule (target, subject, scope, rights, ...).")
    index: int = Field(default=-1, description="Insert position; -1 appends.")


class AclRuleChanged(BaseModel):
    message: str
    rule: AclRule


class MessageResponse(BaseModel):
    message: str


class AclDefaultRequest(_Request):
    policy: Policy


class AclDefaultResponse(BaseModel):
    message: str
    policy: Policy


class AclValidateRequest(_Open):
    version: Any = 1
    defaultPolicy: Any = "allow"
    rules: Any = Field(default_factory=list)


class ValidateResponse(BaseModel):
    valid: bool
    message: str | None = None
    errors: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------- config


class ConfigPatchResponse(BaseModel):
    message: str
    section: str
    config: dict[str, Any]


class ConfigReloadResponse(BaseModel):
    message: str
    filePath: str
    applied: list[str] = Field(description="Hot-reloadable keys whose new value took effect.")
    restartRequired: list[str] = Field(description="Changed keys that need a restart.")


class FileResponse(BaseModel):
    message: str
    filePath: str


# ---------------------------------------------------------------- cluster


class ClusterStatus(_Open):
    enabled: bool
    mode: str


class ClusterHealth(_Open):
    status: str
    mode: str


class ClusterReady(_Open):
    status: str
    mode: str
    ready: bool


class ClusterLeader(BaseModel):
    leaderId: Any
    leaderAddr: str
    isLeader: bool
