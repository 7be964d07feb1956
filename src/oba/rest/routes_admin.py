"""Admin routes (root DN only): the ACL document and the node's configuration.

Rules for this module:
- ACL: there is no ACL engine and no ``aclFile`` config key yet, so the document lives in
  memory (validated for real: rights, scope, subject, target DN syntax, attribute types);
  ``reload``/``save`` answer 409 ``no_acl_file``. The rules are not enforced yet.
- Config: every response masks secrets. PATCH changes only hot-reloadable keys (``HOT_KEYS``)
  after validating the whole section through its pydantic model; any other key is a 400 naming
  it. ``reload`` re-reads the file the node was started from and applies its hot keys, listing
  the changed keys that need a restart; ``save`` writes the effective configuration there.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ValidationError

from oba.acl.document import AclError, AclRule, validate_acl, validate_rule
from oba.config import Config, ConfigError, dump_config, load_config
from oba.rest import models as m
from oba.rest.auth import Admin, State
from oba.rest.errors import ERROR_RESPONSES, ApiError
from oba.rest.state import RestState

log = logging.getLogger("oba.rest")
router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

HOT_KEYS: dict[str, frozenset[str]] = {
    "logging": frozenset({"level", "format"}),
    "server": frozenset({"maxConnections", "readTimeout", "writeTimeout"}),
    "rest": frozenset({"rateLimit", "tokenTTL", "corsOrigins"}),
}
# sections are the nested models; top-level scalar keys (aclFile) are handled on their own
SECTIONS = tuple(
    name for name, info in Config.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
)
TOP_LEVEL_KEYS = tuple(name for name in Config.model_fields if name not in SECTIONS)


# ------------------------------------------------------------------ acl

def _acl_view(state: RestState) -> dict[str, Any]:
    acl = state.acl
    return {
        "defaultPolicy": acl.document.defaultPolicy,
        "rules": [r.model_dump() for r in acl.document.rules],
        "stats": {"ruleCount": len(acl.document.rules), "lastReload": acl.last_reload,
                  "reloadCount": acl.reload_count, "filePath": acl.file_path},
    }


def _rule_index(state: RestState, index: int) -> int:
    if not 0 <= index < len(state.acl.document.rules):
        raise ApiError(404, "rule_not_found",
                       f"no ACL rule at index {index} ({len(state.acl.document.rules)} rules)")
    return index


def _rule(state: RestState, data: object) -> AclRule:
    try:
        return validate_rule(data, state.node.schema)
    except AclError as exc:
        raise ApiError(400, "invalid_rule", "; ".join(exc.errors)) from None


def _no_acl_file() -> ApiError:
    return ApiError(409, "no_acl_file", "no ACL file is configured (there is no aclFile setting "
                    "yet): rules live in memory only")


@router.get("/acl", response_model=m.AclResponse, tags=["acl"], summary="The ACL document")
async def acl_get(state: State, who: Admin) -> dict[str, Any]:
    return _acl_view(state)


@router.get("/acl/rules", response_model=m.AclRulesResponse, tags=["acl"], summary="All rules")
async def acl_rules(state: State, who: Admin) -> dict[str, Any]:
    rules = state.acl.document.rules
    return {"rules": [r.model_dump() for r in rules], "count": len(rules)}


@router.get("/acl/rules/{index}", response_model=AclRule, tags=["acl"], summary="One rule")
async def acl_rule(index: int, state: State, who: Admin) -> dict[str, Any]:
    return state.acl.document.rules[_rule_index(state, index)].model_dump()


@router.post("/acl/rules", status_code=201, response_model=m.AclRuleChanged, tags=["acl"],
             summary="Insert a rule (index -1 appends)")
async def acl_add(req: m.AclRuleAdd, state: State, who: Admin) -> dict[str, Any]:
    rule = _rule(state, req.rule)
    rules = state.acl.document.rules
    if req.index == -1:
        rules.append(rule)
    elif 0 <= req.index <= len(rules):
        rules.insert(req.index, rule)
    else:
        raise ApiError(400, "invalid_index",
                       f"index {req.index} is outside 0..{len(rules)} (or -1 to append)")
    return {"message": "rule added", "rule": rule.model_dump()}


@router.put("/acl/rules/{index}", response_model=m.AclRuleChanged, tags=["acl"],
            summary="Replace a rule")
async def acl_put(index: int, rule_data: Annotated[dict[str, Any], Body()], state: State,
                  who: Admin) -> dict[str, Any]:
    i = _rule_index(state, index)
    rule = _rule(state, rule_data)
    state.acl.document.rules[i] = rule
    return {"message": "rule updated", "rule": rule.model_dump()}


@router.delete("/acl/rules/{index}", response_model=m.MessageResponse, tags=["acl"],
               summary="Delete a rule")
async def acl_delete(index: int, state: State, who: Admin) -> dict[str, Any]:
    del state.acl.document.rules[_rule_index(state, index)]
    return {"message": f"rule {index} deleted"}


@router.put("/acl/default", response_model=m.AclDefaultResponse, tags=["acl"],
            summary="Set the default policy")
async def acl_default(req: m.AclDefaultRequest, state: State, who: Admin) -> dict[str, Any]:
    state.acl.document.defaultPolicy = req.policy
    return {"message": "default policy updated", "policy": req.policy}


@router.post("/acl/reload", response_model=m.MessageResponse, tags=["acl"],
             summary="Reload the ACL file (409 while there is none)")
async def acl_reload(state: State, who: Admin) -> dict[str, Any]:
    raise _no_acl_file()


@router.post("/acl/save", response_model=m.FileResponse, tags=["acl"],
             summary="Save the ACL file (409 while there is none)")
async def acl_save(state: State, who: Admin) -> dict[str, Any]:
    raise _no_acl_file()


@router.post("/acl/validate", response_model=m.ValidateResponse, tags=["acl"],
             summary="Validate an ACL document without applying it")
async def acl_validate(req: m.AclValidateRequest, state: State, who: Admin) -> dict[str, Any]:
    try:
        doc = validate_acl(req.model_dump(), state.node.schema)
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


def apply_side_effects(state: RestState, sections: set[str]) -> None:
    if "logging" in sections:
        from oba.app import setup_logging  # the runtime's own logging setup

        setup_logging(state.node.config)


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
    apply_side_effects(state, {section})
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
    apply_side_effects(state, touched)
    return {"message": "configuration reloaded", "filePath": str(path), "applied": applied,
            "restartRequired": restart}


@router.post("/config/save", response_model=m.FileResponse, tags=["config"],
             summary="Write the effective configuration to the config file")
async def config_save(state: State, who: Admin) -> dict[str, Any]:
    path = _config_file(state)
    text = dump_config(state.node.config, "yaml", mask_secrets=False)
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
