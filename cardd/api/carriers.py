"""/carriers (list, show, create, enable/disable, buy-deck CSV import, the route plan of a number),
/prompts (list, create and update with an uploaded recording) and /admin (PIN rehash): what
`cardd carrier`, `cardd prompt` and `cardd card hash-pins` do, on the same service layer."""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from flask_smorest.fields import Upload
from marshmallow import Schema, ValidationError
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import CombinedMultiDict, FileStorage

from cardd.api import schemas as s
from cardd.api.app import ADMIN, after_of, allow, config, pool, who
from cardd.billing import apistore, carrier_plan, carriers, identity, prompt_store
from cardd.billing.rating import call_cost
from cardd.billing.routing import FIRST_MINUTE_S
from cardd.errors import CatalogError, NotVisible, Problem, PromptError

carriers_blp = Blueprint("carriers", __name__, url_prefix="/carriers", description="Carriers and least-cost routing")


class _MultipartParser(FlaskParser):
    """location="files" reads a multipart body whole: its file parts and its text fields, so one schema
    is both the validation and the one multipart/form-data request body OpenAPI allows."""

    def load_files(self, req: Any, schema: Schema) -> Any:
        return self._makeproxy(CombinedMultiDict([req.files, req.form]), schema)


class _MultipartBlueprint(Blueprint):
    ARGUMENTS_PARSER = _MultipartParser()


prompts_blp = _MultipartBlueprint(
    "prompts", __name__, url_prefix="/prompts", description="Operator prompts (greetings)"
)
admin_blp = Blueprint("admin", __name__, url_prefix="/admin", description="Operator maintenance")

OPERATOR_READ = ("admin", "readonly")  # carriers and prompts are the operator's, not a reseller's


def _carrier_json(c: carriers.CarrierSummary) -> dict[str, Any]:
    return {
        "name": c.name,
        "currency": c.currency,
        "gateways": list(c.gateways),
        "priority": c.priority,
        "channel_limit": c.channel_limit,
        "enabled": c.enabled,
        "rates": c.rates,
        "open_calls": c.open_calls,
    }


def _page(pairs: list[tuple[int, Any]], limit: int, render: Any) -> dict[str, Any]:
    more = len(pairs) > limit
    pairs = pairs[:limit]
    after = pairs[-1][0] if more and pairs else None
    return {"items": [render(item) for _, item in pairs], "next_cursor": apistore.encode_cursor(after)}


@carriers_blp.route("")
class Carriers(MethodView):
    @carriers_blp.arguments(s.PageArgs, location="query")
    @carriers_blp.response(200, s.page_of(s.CarrierSchema))
    @allow(OPERATOR_READ)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Carriers in the order they were added, with their deck sizes and calls up."""
        pairs = carrier_plan.carriers_after(pool(), after_of(args["cursor"]), args["limit"] + 1)
        return _page(pairs, args["limit"], _carrier_json)

    @carriers_blp.arguments(s.CarrierSchema)
    @carriers_blp.response(201, s.CarrierSchema)
    @allow(ADMIN)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add a carrier (enabled); its buy deck comes by POST /carriers/{name}/rates/import."""
        with apistore.transaction(pool()) as (conn, one):
            carriers.create_carrier(
                one,
                body["name"],
                currency=body["currency"],
                gateways=body["gateways"],
                priority=body["priority"],
                channel_limit=body["channel_limit"],
            )
            apistore.audit(
                conn,
                who(),
                "carrier add",
                body,
                detail=f"carrier {body['name']} ({body['currency']}), {len(body['gateways'])} gateway(s)",
            )
        return _carrier_json(carrier_plan.get_carrier(pool(), body["name"]))


@carriers_blp.route("/<string:name>")
class Carrier(MethodView):
    @carriers_blp.response(200, s.CarrierSchema)
    @allow(OPERATOR_READ)
    def get(self, name: str) -> dict[str, Any]:
        return _carrier_json(_known(name))


def _known(name: str) -> carriers.CarrierSummary:
    try:
        return carrier_plan.get_carrier(pool(), name)
    except CatalogError as exc:
        raise NotVisible(str(exc)) from None


def _set_enabled(name: str, enabled: bool) -> dict[str, Any]:
    _known(name)
    verb = "enable" if enabled else "disable"
    with apistore.transaction(pool()) as (conn, one):
        carriers.set_enabled(one, name, enabled)
        apistore.audit(conn, who(), f"carrier {verb}", {"name": name}, detail=f"carrier {name} {verb}d")
    return _carrier_json(carrier_plan.get_carrier(pool(), name))


@carriers_blp.route("/<string:name>/enable")
class CarrierEnable(MethodView):
    @carriers_blp.response(200, s.CarrierSchema)
    @allow(ADMIN)
    def post(self, name: str) -> dict[str, Any]:
        """Enable a carrier: new calls may take it again."""
        return _set_enabled(name, True)


@carriers_blp.route("/<string:name>/disable")
class CarrierDisable(MethodView):
    @carriers_blp.response(200, s.CarrierSchema)
    @allow(ADMIN)
    def post(self, name: str) -> dict[str, Any]:
        """Disable a carrier: calls up on it go on, new calls skip it."""
        return _set_enabled(name, False)


@carriers_blp.route("/<string:name>/rates/import")
class CarrierRatesImport(MethodView):
    @carriers_blp.arguments(s.ImportArgs, location="query")
    @carriers_blp.response(200, s.ImportResultSchema)
    @carriers_blp.doc(requestBody={"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}})
    @allow(ADMIN)
    def post(self, args: dict[str, Any], name: str) -> dict[str, Any]:
        """Import a carrier's buy deck: the CSV of `cardd rate import` (and of `cardd carrier rates import`),
        all or nothing; a file with bad rows changes nothing and the answer lists every bad row with its line."""
        from cardd.billing.rate_import import CARRIER_DECK, ImportRefused, import_rates  # the CLI's importer

        _known(name)
        try:
            text = request.get_data().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Problem(422, "Unprocessable Content", "the CSV is not UTF-8 text") from None
        try:
            with apistore.transaction(pool()) as (conn, one):
                result = import_rates(one, name, io.StringIO(text, newline=""), mode=args["mode"], deck=CARRIER_DECK)
                apistore.audit(
                    conn,
                    who(),
                    "carrier rates import",
                    {"carrier": name, "mode": args["mode"]},
                    detail=f"carrier {name}: {result.rows} rows, {result.inserted} new,"
                    f" {result.updated} changed, {result.deleted} deleted",
                )
        except ImportRefused as exc:
            raise Problem(
                422,
                "Unprocessable Content",
                f"{len(exc.errors)} bad rows of {exc.rows}; nothing imported",
                invalid_params=[{"name": f"line {line}", "reason": why} for line, why in exc.errors],
            ) from None
        return {"rows": result.rows, "inserted": result.inserted, "updated": result.updated, "deleted": result.deleted}


@carriers_blp.route("/route")
class CarrierRoute(MethodView):
    @carriers_blp.arguments(s.RoutePlanArgs, location="query")
    @carriers_blp.response(200, s.RoutePlanSchema)
    @allow(OPERATOR_READ)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The routes a call to `number` would take now, in order, with their first-minute buy price and margin
        against the tariff's sell price (`cardd carrier route`); nothing is reserved. Carriers at their channel
        limit right now are left out, as for a call."""
        plan = carrier_plan.route_plan(pool(), args["number"], args["tariff"], allow_loss=args["allow_loss"])
        refused = plan.sell is None or plan.sell.forbidden
        sell_minute = None if refused or plan.sell is None else call_cost(plan.sell, FIRST_MINUTE_S)
        routes = [
            {
                "carrier": r.carrier,
                "gateway": r.gateway,
                "prefix": r.buy.prefix,
                "buy_first_minute": r.first_minute,
                "margin_first_minute": sell_minute - r.first_minute,
            }
            for r in plan.routes
            if sell_minute is not None
        ]
        return {
            "number": plan.number,
            "tariff": plan.tariff,
            "currency": plan.currency,
            "refused": refused,
            "sell_prefix": plan.sell.prefix if plan.sell else None,
            "sell_first_minute": sell_minute,
            "routes": routes,
        }


# --- prompts ------------------------------------------------------------------------------------------------

_AUDIO = "any audio file sox reads; stored as 8 kHz 16-bit mono wav under daemon.sounds_dir"


class AudioFile(Upload):
    """A file part of the multipart body (a text field of the same name is not a file)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> FileStorage:
        if not isinstance(value, FileStorage):
            raise ValidationError("send the recording as a file part (multipart/form-data)")
        return value


class PromptCreateUpload(s.PromptCreateForm):
    audio = AudioFile(required=True, metadata={"description": _AUDIO})


class PromptUpdateUpload(s.PromptUpdateForm):
    audio = AudioFile(metadata={"description": _AUDIO})


def _prompt_json(p: prompt_store.OperatorPrompt) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "default_audio": p.default_path,
        "languages": dict(p.audio),
    }


def _sounds_dir() -> str:
    sounds_dir = config().sounds_dir
    if not sounds_dir:
        raise Problem(
            409, "Conflict", "daemon.sounds_dir is not set in cardd.yaml: there is nowhere to store a recording"
        )
    return sounds_dir


class _Uploaded:
    """The uploaded audio as a file sox can read (with its name's extension, sox's type hint)."""

    def __init__(self, upload: Any):
        self.upload = upload
        self.path = ""

    def __enter__(self) -> str:
        ext = os.path.splitext(self.upload.filename or "")[1]
        ext = ext if ext[1:].isalnum() and len(ext) <= 6 else ""
        fd, self.path = tempfile.mkstemp(prefix="cardd-upload-", suffix=ext)
        with os.fdopen(fd, "wb") as f:
            self.upload.save(f)
        return self.path

    def __exit__(self, *exc: object) -> None:
        os.unlink(self.path)


def _prompt_problem(exc: PromptError, path: str = "") -> Problem:
    """A refusal of the prompt store as a problem; the upload's temporary path is the client's file."""
    text = str(exc).replace(path, "the uploaded audio") if path else str(exc)
    if "sox is not installed" in text:
        # The client cannot fix this one: the server needs sox (as `cardd prompt` does).
        return Problem(503, "Service Unavailable", text)
    return Problem(422, "Unprocessable Content", text)


@prompts_blp.route("")
class Prompts(MethodView):
    @prompts_blp.arguments(s.PageArgs, location="query")
    @prompts_blp.response(200, s.page_of(s.PromptSchema))
    @allow(OPERATOR_READ)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Prompts by id with their recordings (`cardd prompt list`)."""
        after = after_of(args["cursor"]) or 0
        pairs = [(p.id, p) for p in prompt_store.list_prompts(pool()) if p.id > after][: args["limit"] + 1]
        return _page(pairs, args["limit"], _prompt_json)

    @prompts_blp.arguments(PromptCreateUpload, location="files", content_type="multipart/form-data")
    @prompts_blp.response(201, s.PromptSchema)
    @allow(ADMIN)
    def post(self, form: dict[str, Any]) -> dict[str, Any]:
        """Create a prompt from an uploaded recording (multipart: audio, name, description), converted by sox
        as `cardd prompt create` does; its id is in the answer."""
        sounds_dir = _sounds_dir()
        with _Uploaded(form.pop("audio")) as path:
            try:
                prompt_id = prompt_store.create_prompt(pool(), sounds_dir, path, form["name"], form["description"])
            except PromptError as exc:
                raise _prompt_problem(exc, path) from None
        with apistore.transaction(pool()) as (conn, _):
            apistore.audit(
                conn, who(), "prompt create", {"id": prompt_id, **form}, detail=f"prompt {prompt_id} ({form['name']})"
            )
        return _prompt_json(_prompt(prompt_id))


def _prompt(prompt_id: int) -> prompt_store.OperatorPrompt:
    found = prompt_store.get_prompt(pool(), prompt_id)
    if found is None:
        raise NotVisible(f"no prompt {prompt_id}")
    return found


@prompts_blp.route("/<int:prompt_id>")
class Prompt(MethodView):
    @prompts_blp.response(200, s.PromptSchema)
    @allow(OPERATOR_READ)
    def get(self, prompt_id: int) -> dict[str, Any]:
        return _prompt_json(_prompt(prompt_id))

    @prompts_blp.arguments(PromptUpdateUpload, location="files", content_type="multipart/form-data")
    @prompts_blp.response(200, s.PromptSchema)
    @allow(ADMIN)
    def patch(self, form: dict[str, Any], prompt_id: int) -> dict[str, Any]:
        """Add or replace a recording (a language's with `lang`, else the default one), rename, re-describe
        (`cardd prompt update`); multipart."""
        _prompt(prompt_id)
        upload = form.pop("audio", None)
        if upload is None and "lang" in form:
            raise Problem(
                422,
                "Unprocessable Content",
                "lang names the language of an uploaded audio: send audio",
                invalid_params=[{"name": "audio", "reason": "required with lang"}],
            )
        if upload is None and not form:
            raise Problem(422, "Unprocessable Content", "nothing to update: send audio (and lang), name or description")
        fields = {"lang": form.get("lang"), "name": form.get("name"), "description": form.get("description")}
        if upload is not None:
            sounds_dir = _sounds_dir()
            with _Uploaded(upload) as path:
                try:
                    prompt_store.update_prompt(pool(), sounds_dir, prompt_id, audio=path, **fields)
                except PromptError as exc:
                    raise _prompt_problem(exc, path) from None
        else:
            try:
                prompt_store.update_prompt(pool(), config().sounds_dir, prompt_id, **fields)
            except PromptError as exc:
                raise _prompt_problem(exc) from None
        with apistore.transaction(pool()) as (conn, _):
            apistore.audit(
                conn,
                who(),
                "prompt update",
                {"id": prompt_id, "audio": upload is not None, **form},
                detail=f"prompt {prompt_id} updated",
            )
        return _prompt_json(_prompt(prompt_id))


# --- maintenance --------------------------------------------------------------------------------------------


@admin_blp.route("/hash-pins")
class HashPins(MethodView):
    @admin_blp.response(200, s.HashedPinsSchema)
    @allow(ADMIN)
    def post(self) -> dict[str, Any]:
        """Hash every imported plain PIN in place (`cardd card hash-pins`); safe to repeat."""
        done = identity.hash_plain_pins(pool())
        with apistore.transaction(pool()) as (conn, _):
            apistore.audit(conn, who(), "card hash-pins", {}, detail=f"{done} plain PINs hashed")
        return {"hashed": done}
