"""The operator's rules for actions on customer events (``FLAVOURS_ACTIONS_FILE``, YAML).

A rule says on which customer events (``created``, ``updated``, ``deleted``, ``reactivated``,
derived from the dimension's versions) to do what (an ``email`` or a signed ``webhook``), for
which customers (``where``, ``require``), and how old a version may be when it is first seen
(``max_age``). Every error names the file and line it comes from.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from warehouse import CUSTOMER_ATTRIBUTES

EVENTS = ("created", "updated", "deleted", "reactivated")
CUSTOMER_FIELDS = (
    "customer_id",
    "version",
    "valid_from",
    "is_deleted",
    "change_action",
    *CUSTOMER_ATTRIBUTES,
)
"""The columns of ``analytics.dim_customer`` a rule may filter on and a template may use (all
but the dimension's bookkeeping; ``fcm_token`` is never in the dimension)."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_templates = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false (YAML 1.1 reads the key ``on:`` as True)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

Event = Literal["created", "updated", "deleted", "reactivated"]
FieldName = Annotated[str, Field(pattern=r"^[a-z_]+$")]
Scalar = str | int | float | bool | None


class RulesFileError(ValueError):
    """The rules file cannot be used; the message names the file and line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmailTemplate(_Strict):
    subject: str
    body: str

    @field_validator("subject", "body")
    @classmethod
    def _compiles(cls, text: str) -> str:
        try:
            parsed = _templates.parse(text)
        except TemplateSyntaxError as error:
            raise ValueError(f"template error: {error.message}") from None
        unknown = sorted(meta.find_undeclared_variables(parsed) - set(CUSTOMER_FIELDS))
        if unknown:
            raise ValueError(
                f"template uses {', '.join(unknown)}, not a customer attribute "
                f"(one of: {', '.join(CUSTOMER_FIELDS)})"
            )
        return text


class EmailAction(EmailTemplate):
    """``subject`` and ``body`` are Jinja templates over the customer's attributes; a customer
    whose ``lang`` is a key of ``languages`` gets that language's template."""

    languages: dict[str, EmailTemplate] = Field(default_factory=dict)

    def template_for(self, lang: str | None) -> EmailTemplate:
        return self.languages.get(lang or "", self)


class WebhookAction(_Strict):
    url: Annotated[str, Field(pattern=r"^https?://")]
    secret_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] = Field(
        description="The environment variable holding the Standard Webhooks secret (whsec_...)."
    )
    timeout_s: float = Field(10, gt=0, le=60)


class Rule(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]
    on: list[Event]
    where: dict[FieldName, Scalar | list[Scalar]] = Field(default_factory=dict)
    require: list[FieldName] = Field(default_factory=list)
    max_age: timedelta | None = timedelta(hours=24)
    do: Literal["email", "webhook"]
    email: EmailAction | None = None
    webhook: WebhookAction | None = None

    @field_validator("on", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if value is None or value == "none":
            return None
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("max_age is a duration like 30m, 24h or 7d, or none")
        return timedelta(**{_UNITS[match[2]]: float(match[1])})

    @field_validator("where", "require")
    @classmethod
    def _known_fields(cls, value: Any) -> Any:
        unknown = sorted(set(value) - set(CUSTOMER_FIELDS))
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)}: not a customer attribute "
                f"(one of: {', '.join(CUSTOMER_FIELDS)})"
            )
        return value

    @model_validator(mode="after")
    def _action_matches(self) -> Rule:
        if self.do == "email" and (self.email is None or self.webhook is not None):
            raise ValueError("a rule with `do: email` needs an `email:` section, and only that")
        if self.do == "webhook" and (self.webhook is None or self.email is not None):
            raise ValueError("a rule with `do: webhook` needs a `webhook:` section, and only that")
        return self

    @property
    def required(self) -> list[str]:
        """Attributes a customer must have (not null): ``require``, and ``email`` to be mailed."""
        return sorted({*self.require, *(["email"] if self.do == "email" else [])})

    def render_email(self, customer: dict[str, Any]) -> tuple[str, str]:
        """The subject and body of this rule's e-mail to ``customer``."""
        assert self.email is not None
        template = self.email.template_for(customer.get("lang"))
        values = {name: customer.get(name) for name in CUSTOMER_FIELDS}
        subject = _compiled(template.subject).render(values)
        return " ".join(subject.split()), _compiled(template.body).render(values)


@functools.lru_cache(maxsize=256)
def _compiled(text: str) -> Template:
    """A template compiled once (compiling costs more than sending a message)."""
    return _templates.from_string(text)


class RulesFile(_Strict):
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique_names(self) -> RulesFile:
        names = [rule.name for rule in self.rules]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"rule names must be unique: {', '.join(duplicated)}")
        return self


@dataclass(frozen=True)
class Rules:
    path: Path
    rules: tuple[Rule, ...]

    def __iter__(self):
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def named(self, name: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.name == name), None)


def load_rules(path: str | Path) -> Rules:
    """Read and check the rules file; a ``RulesFileError`` says what is wrong and where."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise RulesFileError(f"{path}: cannot read the actions file: {error.strerror}") from None
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise RulesFileError(f"{path}{line}: not valid YAML: {error.problem}") from None
    try:
        parsed = RulesFile.model_validate(data if data is not None else {})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        line = _line_of(root, first["loc"])
        raise RulesFileError(
            f"{path}:{line}: {where or 'file'}: {message}"
            + (f" ({len(error.errors()) - 1} more errors)" if len(error.errors()) > 1 else "")
        ) from None
    return Rules(path, tuple(parsed.rules))


def _line_of(node: yaml.Node | None, loc: tuple) -> int:
    """The line of the deepest node of ``loc`` that exists in the YAML tree (1-based)."""
    if node is None:
        return 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node = child
    return node.start_mark.line + 1
