"""The Bot API specification subset the stand-in validates every request against.

`botapi_subset.json` is derived from the official method/type list (`api.min.json`) with
`python -m tgstandin.spec --derive /work/shared/telegram-bot-api/api.min.json`; the
derivation is deterministic so re-running it after a spec update gives a reviewable diff.

At runtime `Spec.parse_params` turns the raw request values (form strings, JSON values or
uploaded files) into typed Python values, rejecting anything Telegram would reject and, on
purpose, also unknown parameter names (so that a misspelt optional parameter fails tests
instead of being silently ignored).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tgstandin.errors import ApiError, bad_request

PACKAGE_DIR = Path(__file__).resolve().parent
SUBSET_PATH = PACKAGE_DIR / "botapi_subset.json"
LICENSE_PATH = PACKAGE_DIR / "LICENSE-telegram-bot-api-spec"

IMPLEMENTED_METHODS: tuple[str, ...] = (
    "getMe",
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "setMyCommands",
    "sendMessage",
    "sendPhoto",
    "copyMessage",
    "editMessageText",
    "editMessageCaption",
    "deleteMessage",
    "answerCallbackQuery",
)

# Types the stand-in produces. They are not used for request validation; they let the tests
# check that every object we emit only uses field names Telegram defines.
RESPONSE_TYPES: tuple[str, ...] = (
    "Update",
    "Message",
    "MessageId",
    "User",
    "Chat",
    "CallbackQuery",
    "ChatMemberUpdated",
    "ChatMemberMember",
    "ChatMemberBanned",
    "ChatMemberLeft",
    "PhotoSize",
    "MessageEntity",
    "InlineKeyboardMarkup",
    "InlineKeyboardButton",
)

PRIMITIVE_TYPES = frozenset({"Integer", "Float", "Boolean", "True", "String", "InputFile"})
_ARRAY_PREFIX = "Array of "
_DISCRIMINATOR = re.compile(r'(?:must be|always) "?([a-z_]+)"?')
_INTEGER = re.compile(r"-?\d+")
_TRUE_WORDS = frozenset({"true", "1"})
_FALSE_WORDS = frozenset({"false", "0"})
# Telegram's own wording for the two omissions every bot author eventually makes.
_MISSING_MESSAGES = {"chat_id": "chat_id is empty", "text": "message text is empty"}


# ---------------------------------------------------------------------------------------------
# Derivation (offline, reproducible)


def base_type(type_name: str) -> str:
    while type_name.startswith(_ARRAY_PREFIX):
        type_name = type_name[len(_ARRAY_PREFIX) :]
    return type_name


def _slim_fields(fields: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"name": f["name"], "types": list(f["types"]), "required": bool(f["required"])}
        for f in fields
    ]


def _discriminator(type_spec: Mapping[str, Any]) -> dict[str, str] | None:
    """A subtype names itself in its first field ("Scope type, must be chat")."""
    if not type_spec.get("subtype_of") or not type_spec.get("fields"):
        return None
    first = type_spec["fields"][0]
    match = _DISCRIMINATOR.search(first.get("description", ""))
    return {"field": first["name"], "value": match.group(1)} if match else None


def _slim_type(type_spec: Mapping[str, Any]) -> dict[str, Any]:
    slim: dict[str, Any] = {"fields": _slim_fields(type_spec.get("fields", []))}
    if type_spec.get("subtypes"):
        slim["subtypes"] = list(type_spec["subtypes"])
    discriminator = _discriminator(type_spec)
    if discriminator is not None:
        slim["discriminator"] = discriminator
    return slim


def _types_reachable_from(api_types: Mapping[str, Any], roots: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    stack = [base_type(name) for name in roots]
    while stack:
        name = stack.pop()
        if name in seen or name not in api_types:
            continue
        seen.add(name)
        spec = api_types[name]
        stack.extend(spec.get("subtypes", []))
        stack.extend(base_type(t) for f in spec.get("fields", []) for t in f["types"])
    return seen


def derive_subset(api: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the full spec the stand-in needs, in a stable, diff-friendly shape."""
    methods = {name: api["methods"][name] for name in IMPLEMENTED_METHODS}
    parameter_types = (t for m in methods.values() for f in m.get("fields", []) for t in f["types"])
    type_names = _types_reachable_from(api["types"], parameter_types) | set(RESPONSE_TYPES)
    return {
        "version": api["version"],
        "release_date": api["release_date"],
        "derived_by": "python -m tgstandin.spec --derive <api.min.json>",
        "all_methods": sorted(api["methods"]),
        "methods": {
            name: {"fields": _slim_fields(m.get("fields", [])), "returns": list(m["returns"])}
            for name, m in sorted(methods.items())
        },
        "types": {name: _slim_type(api["types"][name]) for name in sorted(type_names)},
    }


def write_subset(api_path: Path, out_dir: Path = PACKAGE_DIR) -> tuple[Path, Path]:
    api = json.loads(api_path.read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    subset_path = out_dir / SUBSET_PATH.name
    subset_path.write_text(json.dumps(derive_subset(api), indent=1) + "\n", encoding="utf-8")
    licence = (api_path.parent / "LICENSE").read_text(encoding="utf-8")
    header = (
        f"This licence covers {SUBSET_PATH.name} in this directory, which is derived from\n"
        f"the Telegram Bot API method and type list ({api_path.name}, {api['version']}).\n\n"
    )
    licence_path = out_dir / LICENSE_PATH.name
    licence_path.write_text(header + licence, encoding="utf-8")
    return subset_path, licence_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tgstandin.spec")
    parser.add_argument("--derive", type=Path, required=True, metavar="API_MIN_JSON")
    parser.add_argument("--out-dir", type=Path, default=PACKAGE_DIR)
    args = parser.parse_args(argv)
    for path in write_subset(args.derive, args.out_dir):
        print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# Runtime validation


@dataclass(frozen=True, slots=True)
class Upload:
    """A file that arrived as a multipart part (its bytes are not kept)."""

    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    types: tuple[str, ...]
    required: bool


@dataclass(frozen=True, slots=True)
class TypeSpec:
    name: str
    fields: Mapping[str, FieldSpec]
    subtypes: tuple[str, ...]
    discriminator: tuple[str, str] | None


class _Invalid(Exception):
    """A value does not fit; `path` says where inside a nested object."""

    def __init__(self, problem: str, path: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = path

    def within(self, step: str) -> _Invalid:
        return _Invalid(self.problem, step + self.path)


def _field_specs(fields: Iterable[Mapping[str, Any]]) -> dict[str, FieldSpec]:
    return {f["name"]: FieldSpec(f["name"], tuple(f["types"]), f["required"]) for f in fields}


class Spec:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.version: str = data["version"]
        self._canonical = {name.lower(): name for name in data["all_methods"]}
        self.methods: dict[str, dict[str, FieldSpec]] = {
            name: _field_specs(m["fields"]) for name, m in data["methods"].items()
        }
        self.types: dict[str, TypeSpec] = {
            name: TypeSpec(
                name,
                _field_specs(t["fields"]),
                tuple(t.get("subtypes", ())),
                (t["discriminator"]["field"], t["discriminator"]["value"])
                if "discriminator" in t
                else None,
            )
            for name, t in data["types"].items()
        }

    def canonical_method(self, name: str) -> str | None:
        """Telegram matches method names case-insensitively."""
        return self._canonical.get(name.lower())

    def is_implemented(self, method: str) -> bool:
        return method in self.methods

    def parse_params(
        self, method: str, raw: Mapping[str, Any], uploads: Mapping[str, Upload]
    ) -> dict[str, Any]:
        fields = self.methods[method]
        parsed: dict[str, Any] = {}
        for name, value in raw.items():
            spec = fields.get(name)
            if spec is None:
                raise bad_request(f"unknown parameter '{name}' for method '{method}'")
            parsed[name] = self._parse_param(method, spec, _resolve_attachment(value, uploads))
        for name, upload in uploads.items():
            spec = fields.get(name)
            if name not in parsed and spec is not None and "InputFile" in spec.types:
                parsed[name] = upload
        for spec in fields.values():
            if spec.required and spec.name not in parsed:
                missing = _MISSING_MESSAGES.get(spec.name)
                raise bad_request(
                    missing or f"parameter '{spec.name}' is required for method '{method}'"
                )
        return parsed

    def _parse_param(self, method: str, spec: FieldSpec, value: Any) -> Any:
        try:
            return self._coerce(value, spec.types)
        except _Invalid as err:
            where = f"parameter '{spec.name}' of method '{method}'"
            if err.path:
                raise bad_request(f"{where} is invalid at {err.path}: {err.problem}") from None
            raise bad_request(f"{where} {err.problem}") from None

    def _coerce(self, value: Any, types: tuple[str, ...]) -> Any:
        if len(types) == 1:
            return self._coerce_one(value, types[0])
        object_types = [t for t in types if t not in PRIMITIVE_TYPES]
        for type_name in types:
            if type_name in PRIMITIVE_TYPES:
                try:
                    return self._coerce_one(value, type_name)
                except _Invalid:
                    continue
        if object_types:
            # Report against the object type whose fields best match what was sent.
            return self._coerce_one(value, self._best_object_type(value, object_types))
        raise _Invalid(f"must be {' or '.join(types)}")

    def _best_object_type(self, value: Any, candidates: list[str]) -> str:
        keys = set(_as_json_object(value, candidates[0]))
        best = max(candidates, key=lambda name: self._overlap(keys, name))
        return best

    def _overlap(self, keys: set[str], type_name: str) -> int:
        spec = self.types.get(type_name)
        if spec is None:
            return 0
        return len(keys & set(spec.fields)) * 2 - len(keys - set(spec.fields))

    def _coerce_one(self, value: Any, type_name: str) -> Any:
        coercer = _PRIMITIVE_COERCERS.get(type_name)
        if coercer is not None:
            return coercer(value)
        if type_name.startswith(_ARRAY_PREFIX):
            return self._coerce_array(value, type_name[len(_ARRAY_PREFIX) :])
        spec = self.types.get(type_name)
        if spec is None:
            return value  # a type outside the subset: accept it as sent
        return self._coerce_object(_as_json_object(value, type_name), spec)

    def _coerce_array(self, value: Any, item_type: str) -> list[Any]:
        items = _json_value(value) if isinstance(value, str) else value
        if not isinstance(items, list):
            raise _Invalid(f"must be a JSON array of {item_type}")
        result = []
        for index, item in enumerate(items):
            try:
                result.append(self._coerce_one(item, item_type))
            except _Invalid as err:
                raise err.within(f"[{index}]") from None
        return result

    def _coerce_object(self, obj: dict[str, Any], spec: TypeSpec) -> dict[str, Any]:
        if spec.subtypes:
            spec = self._pick_subtype(obj, spec)
        result: dict[str, Any] = {}
        for key, item in obj.items():
            field = spec.fields.get(key)
            if field is None:
                raise _Invalid(f"unknown field '{key}' in {spec.name}")
            try:
                result[key] = self._coerce(item, field.types)
            except _Invalid as err:
                raise err.within(f".{key}") from None
        for field in spec.fields.values():
            if field.required and field.name not in result:
                raise _Invalid(f"field '{field.name}' is required in {spec.name}")
        if (
            spec.discriminator is not None
            and result[spec.discriminator[0]] != spec.discriminator[1]
        ):
            raise _Invalid(f"{spec.discriminator[0]} must be '{spec.discriminator[1]}'")
        return result

    def _pick_subtype(self, obj: dict[str, Any], spec: TypeSpec) -> TypeSpec:
        for name in spec.subtypes:
            subtype = self.types.get(name)
            if subtype is None or subtype.discriminator is None:
                continue
            field, expected = subtype.discriminator
            if obj.get(field) == expected:
                return subtype
        raise _Invalid(f"unsupported {spec.name} type {obj.get('type')!r}")


def _resolve_attachment(value: Any, uploads: Mapping[str, Upload]) -> Any:
    if isinstance(value, str) and value.startswith("attach://"):
        name = value[len("attach://") :]
        if name not in uploads:
            raise bad_request(f"can't find attached file '{name}'")
        return uploads[name]
    return value


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise _Invalid("must be valid JSON") from None


def _as_json_object(value: Any, type_name: str) -> dict[str, Any]:
    obj = _json_value(value) if isinstance(value, str) else value
    if not isinstance(obj, dict):
        raise _Invalid(f"must be a JSON object ({type_name})")
    return obj


def _coerce_integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    raise _Invalid("must be Integer")


def _coerce_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise _Invalid("must be Float")


def _coerce_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, str | int) else None
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise _Invalid("must be Boolean")


def _coerce_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _Invalid("must be String")


def _coerce_input_file(value: Any) -> Upload:
    if isinstance(value, Upload):
        return value
    raise _Invalid("must be an uploaded file")


_PRIMITIVE_COERCERS: dict[str, Any] = {
    "Integer": _coerce_integer,
    "Float": _coerce_float,
    "Boolean": _coerce_boolean,
    "True": _coerce_boolean,
    "String": _coerce_string,
    "InputFile": _coerce_input_file,
}


@cache
def load_spec(path: Path = SUBSET_PATH) -> Spec:
    return Spec(json.loads(path.read_text(encoding="utf-8")))


def raise_if_unsupported(spec: Spec, method: str) -> None:
    if not spec.is_implemented(method):
        raise ApiError(400, "Bad Request: method is not supported by the stand-in")


if __name__ == "__main__":
    sys.exit(main())
