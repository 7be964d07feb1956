"""Admin routes (root DN only): the ACL document and the node's configuration.

Rules for this module:
- ACL: the document in force is ``node.access`` (enforced by ``oba.operations``). Rule and
  default-policy changes are validated, then replicated as one ``acl.set`` SystemCommand with
  the whole document (``oba.acl.runtime``); under the built-in default they start from an empty
  deny-by-default document. ``reload``/``save`` work on ``aclFile`` (409 ``no_acl_file``
  without one); a broken file is a 400 naming the problems, and the rules in force stay.
  ``explain`` reports the deciding rule (or ``"default"``) and why.
- Config: every response masks secrets. PATCH changes only hot-reloadable keys (``HOT_KEYS``)
  after validating the whole section through its pydantic model; any other key is a 400 naming
  it. ``reload`` re-reads the file the node was started from and applies its hot keys, listing
  the changed keys that need a restart; ``save`` writes the effective configuration there
  (``oba.config.render_config_file``): values the file took from ``${VAR}`` references are
  written back as those references, and a secret only ever as the file itself wrote it (never
  one resolved from a reference or set by an ``OBA_*`` variable).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oba.acl.document import AclDocument, AclError, AclRule, validate_acl, validate_rule
from oba.acl.runtime import set_document
from oba.config import Config, ConfigError, dump_config, load_config, render_config_file
from oba.operations import Identity
from oba.protocol.dn import DNError
from oba.rest import models as m
from oba.rest.auth import Admin, State
from oba.rest.errors import ERROR_RESPONSES, ApiError
from oba.rest.state import RestState
from oba.schema import InvalidValue, UndefinedAttribute
from oba.server.workers import sync_workers

Right = Literal["read", "write", "add", "delete", "search", "compare"]

log = logging.getLogger("oba.rest")
router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

HOT_KEYS: dict[str, frozenset[str]] = {
    "logging": frozenset({"level", "format"}),
    "server": frozenset({"maxConnections", "readTimeout", "writeTimeout",
                         "anonymousIdleTimeout"}),
    "rest": frozenset({"rateLimit", "tokenTTL", "corsOrigins", "maxBodySize",
                       "clusterStatusAuth"}),
}
# sections are the nested models; top-level scalar keys (aclFile) are handled on their own
SECTIONS = tuple(
    name for name, info in Config.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
)
TOP_LEVEL_KEYS = tuple(name for name in Config.model_fields if name not in SECTIONS)


# ------------------------------------------------------------------ acl

EMPTY_DOCUMENT = AclDocument(defaultPolicy="deny")


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bindDN: str = Field(default="", description="Who asks (empty: anonymous).")
    targetDN: str = Field(description="The entry asked about.")
    right: Right = Field(description="read, write, add, delete, search or compare.")
    attribute: str | None = Field(default=None, description="An attribute (none: the entry).")


class ExplainRule(BaseModel):
    index: int
    rule: AclRule


class ExplainResponse(BaseModel):
    allowed: bool
    rule: ExplainRule | Literal["default"]
    reason: str


def _document(state: RestState) -> AclDocument:
    """The document in force; under the built-in default, an empty deny-by-default document
    (API changes start from it, so a first rule never opens everything up)."""
    doc = state.node.access.document
    return doc if doc is not None else EMPTY_DOCUMENT


def _acl_view(state: RestState) -> dict[str, Any]:
    doc = _document(state)
    manager = state.node.access.manager
    stats = manager.stats() if manager is not None else {
        "ruleCount": len(doc.rules), "lastReload": None, "reloadCount": 0, "filePath": None}
    return {"defaultPolicy": doc.defaultPolicy, "rules": [r.model_dump() for r in doc.rules],
            "stats": stats}


def _rule_index(state: RestState, index: int) -> int:
    rules = _document(state).rules
    if not 0 <= index < len(rules):
        raise ApiError(404, "rule_not_found",
                       f"no ACL rule at index {index} ({len(rules)} rules)")
    return index


def _rule(state: RestState, data: object) -> AclRule:
    try:
        return validate_rule(data, state.node.schema)
    except AclError as exc:
        raise ApiError(400, "invalid_rule", "; ".join(exc.errors)) from None


async def _replace(state: RestState, who: Identity, doc: AclDocument) -> None:
    """Replicate ``doc`` as the new document (an ``acl.set`` command) and enforce it."""
    manager = state.node.access.manager
    try:
        if manager is not None:
            await manager.set_document(doc, who.dn)
        else:
            await set_document(state.node, doc, who.dn)
    except AclError as exc:
        raise ApiError(400, "invalid_acl", str(exc)) from None
    log.info("ACL changed over REST by %s: %d rules, defaultPolicy %s", who.dn, len(doc.rules),
             doc.defaultPolicy)


def _editable(state: RestState) -> AclDocument:
    return _document(state).model_copy(deep=True)


def _file_manager(state: RestState) -> Any:
    manager = state.node.access.manager
    if manager is None or manager.file_path is None:
        raise ApiError(409, "no_acl_file", "no ACL file is configured (aclFile is empty): rules "
                       "set over the API are stored in the directory")
    return manager


@router.get("/acl", response_model=m.AclResponse, tags=["acl"], summary="The ACL document")
async def acl_get(state: State, who: Admin) -> dict[str, Any]:
    return _acl_view(state)


@router.get("/acl/rules", response_model=m.AclRulesResponse, tags=["acl"], summary="All rules")
async def acl_rules(state: State, who: Admin) -> dict[str, Any]:
    rules = _document(state).rules
    return {"rules": [r.model_dump() for r in rules], "count": len(rules)}


@router.get("/acl/rules/{index}", response_model=AclRule, tags=["acl"], summary="One rule")
async def acl_rule(index: int, state: State, who: Admin) -> dict[str, Any]:
    return _document(state).rules[_rule_index(state, index)].model_dump()


@router.post("/acl/rules", status_code=201, response_model=m.AclRuleChanged, tags=["acl"],
             summary="Insert a rule (index -1 appends); replicated")
async def acl_add(req: m.AclRuleAdd, state: State, who: Admin) -> dict[str, Any]:
    rule = _rule(state, req.rule)
    doc = _editable(state)
    if req.index == -1:
        doc.rules.append(rule)
    elif 0 <= req.index <= len(doc.rules):
        doc.rules.insert(req.index, rule)
    else:
        raise ApiError(400, "invalid_index",
                       f"index {req.index} is outside 0..{len(doc.rules)} (or -1 to append)")
    await _replace(state, who, doc)
    return {"message": "rule added", "rule": rule.model_dump()}


@router.put("/acl/rules/{index}", response_model=m.AclRuleChanged, tags=["acl"],
            summary="Replace a rule; replicated")
async def acl_put(index: int, rule_data: Annotated[dict[str, Any], Body()], state: State,
                  who: Admin) -> dict[str, Any]:
    i = _rule_index(state, index)
    rule = _rule(state, rule_data)
    doc = _editable(state)
    doc.rules[i] = rule
    await _replace(state, who, doc)
    return {"message": "rule updated", "rule": rule.model_dump()}


@router.delete("/acl/rules/{index}", response_model=m.MessageResponse, tags=["acl"],
               summary="Delete a rule; replicated")
async def acl_delete(index: int, state: State, who: Admin) -> dict[str, Any]:
    i = _rule_index(state, index)
    doc = _editable(state)
    del doc.rules[i]
    await _replace(state, who, doc)
    return {"message": f"rule {index} deleted"}


@router.put("/acl/default", response_model=m.AclDefaultResponse, tags=["acl"],
            summary="Set the default policy; replicated")
async def acl_default(req: m.AclDefaultRequest, state: State, who: Admin) -> dict[str, Any]:
    doc = _editable(state)
    doc.defaultPolicy = req.policy
    await _replace(state, who, doc)
    return {"message": "default policy updated", "policy": req.policy}


@router.post("/acl/reload", response_model=m.MessageResponse, tags=["acl"],
             summary="Re-read the ACL file (400 and no change when it is broken)")
async def acl_reload(state: State, who: Admin) -> dict[str, Any]:
    manager = _file_manager(state)
    try:
        doc = manager.reload_file(f"REST reload by {who.dn}")
    except AclError as exc:
        raise ApiError(400, "invalid_acl", f"ACL file rejected, the previous rules stay in "
                       f"force: {exc}") from None
    await sync_workers(state.node)
    return {"message": f"ACL reloaded from {manager.file_path}: {len(doc.rules)} rules"}


@router.post("/acl/save", response_model=m.FileResponse, tags=["acl"],
             summary="Write the document in force to the ACL file")
async def acl_save(state: State, who: Admin) -> dict[str, Any]:
    manager = _file_manager(state)
    try:
        path = manager.save()
    except AclError as exc:
        raise ApiError(409, "no_acl_document", str(exc)) from None
    except OSError as exc:
        raise ApiError(500, "save_failed", f"cannot write {manager.file_path}: "
                       f"{exc.strerror}") from None
    return {"message": "ACL saved", "filePath": path}


@router.post("/acl/explain", response_model=ExplainResponse, tags=["acl"],
             summary="Which rule decides a right for a bind DN on a target, and why")
async def acl_explain(req: ExplainRequest, state: State, who: Admin) -> dict[str, Any]:
    schema = state.node.schema
    try:
        bind_ndn = schema.normalize_dn(req.bindDN) if req.bindDN else ""
        target_ndn = schema.normalize_dn(req.targetDN)
    except (DNError, InvalidValue, UndefinedAttribute) as exc:
        raise ApiError(400, "invalid_dn", f"invalid DN: {exc}", 34) from None
    attr = None
    if req.attribute:
        attr = schema.canonical(req.attribute.split(";", 1)[0])
        if attr is None:
            raise ApiError(400, "undefined_attribute",
                           f"{req.attribute}: attribute type undefined", 17)
    decision = state.node.access.decide(bind_ndn, target_ndn, req.right, attr)
    rule: dict[str, Any] | str = "default"
    if decision.rule_index is not None and decision.rule is not None:
        rule = {"index": decision.rule_index, "rule": decision.rule.model_dump()}
    return {"allowed": decision.allowed, "rule": rule, "reason": decision.reason}


@router.post("/acl/validate", response_model=m.ValidateResponse, tags=["acl"],
             summary="Validate an ACL document without applying it")
async def acl_validate(req: m.AclValidateRequest, state: State, who: Admin) -> dict[str, Any]:
    try:
        # only what the caller wrote: an omitted defaultPolicy is refused/denied, as in a file
        doc = validate_acl(req.model_dump(exclude_unset=True), state.node.schema)
    except AclError as exc:
        return {"valid": False, "errors": exc.errors}
    return {"valid": True, "message": f"valid: {len(doc.rules)} rules"}


# ------------------------------------------------------------------ config

def masked(cfg: Config) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(dump_config(cfg, "json", mask_secrets=True))
    return data


def _section(name: str) -> str:
    if name not in SECTIONS:
        raise ApiError(404, "unknown_section",
                       f"no config section {name!r} (sections: {', '.join(SECTIONS)})")
    return name


def _pydantic_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(f"{prefix}{path}: {msg}")
    return out


async def apply_side_effects(state: RestState, sections: set[str]) -> None:
    """After hot keys changed: logging set up again, and the listener workers (when
    ``server.workers`` > 1) told and waited for, so the change is in force everywhere."""
    if "logging" in sections:
        from oba.app import setup_logging  # the runtime's own logging setup

        setup_logging(state.node.config)
    pool = getattr(state.node, "workers", None)
    if pool is not None and sections:
        for section in sections:
            data = getattr(state.node.config, section).model_dump(mode="json")
            pool.push_hot(section, {k: data[k] for k in HOT_KEYS.get(section, ()) if k in data})
        await pool.sync()


@router.get("/config", response_model=dict[str, Any], tags=["config"],
            summary="The effective configuration (secrets masked)")
async def config_get(state: State, who: Admin) -> dict[str, Any]:
    return masked(state.node.config)


@router.get("/config/{section}", response_model=dict[str, Any], tags=["config"],
            summary="One configuration section (secrets masked)")
async def config_section(section: str, state: State, who: Admin) -> dict[str, Any]:
    data: dict[str, Any] = masked(state.node.config)[_section(section)]
    return data


@router.patch("/config/{section}", response_model=m.ConfigPatchResponse, tags=["config"],
              summary="Change hot-reloadable keys of a section")
async def config_patch(section: str, patch: Annotated[dict[str, Any], Body()], state: State,
                       who: Admin) -> dict[str, Any]:
    _section(section)
    cfg = state.node.config
    current: BaseModel = getattr(cfg, section)
    fields = type(current).model_fields
    hot = HOT_KEYS.get(section, frozenset())
    if not patch:
        raise ApiError(400, "invalid_request", "the body names no key to change")
    for key in patch:
        if key not in fields:
            raise ApiError(400, "unknown_key", f"{section}.{key}: unknown key")
        if key not in hot:
            raise ApiError(400, "not_hot_reloadable",
                           f"{section}.{key} cannot be changed at run time (restart with a new "
                           f"config); hot-reloadable here: {', '.join(sorted(hot)) or 'none'}")
    merged = {**current.model_dump(), **patch}
    try:
        new = type(current).model_validate(merged)
    except ValidationError as exc:
        raise ApiError(400, "invalid_config",
                       "; ".join(_pydantic_errors(exc, f"{section}."))) from None
    for key in patch:
        setattr(current, key, getattr(new, key))
    await apply_side_effects(state, {section})
    log.info("config: %s changed over REST by %s: %s", section, who.dn, sorted(patch))
    return {"message": "configuration updated", "section": section,
            "config": masked(cfg)[section]}


def _config_file(state: RestState) -> Path:
    path = state.config_path()
    if path is None:
        raise ApiError(409, "no_config_file", "the node was started without a config file")
    return path


@router.post("/config/reload", response_model=m.ConfigReloadResponse, tags=["config"],
             summary="Re-read the config file; apply its hot-reloadable keys")
async def config_reload(state: State, who: Admin) -> dict[str, Any]:
    path = _config_file(state)
    try:
        fresh = load_config(str(path))
        fresh.validate_semantics()
    except ConfigError as exc:
        raise ApiError(400, "invalid_config", "; ".join(exc.errors)) from None
    cfg = state.node.config
    old_data = cfg.model_dump(mode="json")
    new_data = fresh.model_dump(mode="json")
    applied: list[str] = []
    restart: list[str] = []
    touched: set[str] = set()
    for section in SECTIONS:
        for key, value in new_data[section].items():
            if old_data[section].get(key) == value:
                continue
            if key in HOT_KEYS.get(section, frozenset()):
                setattr(getattr(cfg, section), key, getattr(getattr(fresh, section), key))
                applied.append(f"{section}.{key}")
                touched.add(section)
            else:
                restart.append(f"{section}.{key}")
    restart += [key for key in TOP_LEVEL_KEYS if old_data.get(key) != new_data.get(key)]
    cfg._source = fresh._source  # ``save`` writes the file's own references and secrets
    await apply_side_effects(state, touched)
    return {"message": "configuration reloaded", "filePath": str(path), "applied": applied,
            "restartRequired": restart}


@router.post("/config/save", response_model=m.FileResponse, tags=["config"],
             summary="Write the effective configuration to the config file")
async def config_save(state: State, who: Admin) -> dict[str, Any]:
    path = _config_file(state)
    try:
        text = render_config_file(state.node.config)
    except ConfigError as exc:
        raise ApiError(409, "save_refused", "; ".join(exc.errors)) from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ApiError(500, "save_failed", f"cannot write {path}: {exc.strerror}") from None
    return {"message": "configuration saved", "filePath": str(path)}


@router.post("/config/validate", response_model=m.ValidateResponse, tags=["config"],
             summary="Validate a whole configuration document (as a file would be)")
async def config_validate(document: Annotated[dict[str, Any], Body()], state: State,
                          who: Admin) -> dict[str, Any]:
    try:
        cfg = Config.model_validate(document)
        cfg.validate_semantics()
    except ValidationError as exc:
        return {"valid": False, "errors": _pydantic_errors(exc)}
    except ConfigError as exc:
        return {"valid": False, "errors": [e.removeprefix("<defaults>: ") for e in exc.errors]}
    return {"valid": True, "message": "configuration is valid"}
