"""The simulated FreeSWITCH: connects to the daemon like the `socket`
dialplan app does and serves its outbound Event Socket commands.

    switch = Switch()
    call = switch.call("127.0.0.1", 8084, Caller(cli="15551234567",
                       destination="cc.en", digits=["1234#", "5678#"]),
                       {"442071234567": Callee(talk=60)})
    transcript = call.wait(30)
"""

from __future__ import annotations

import logging
import random
import socket as pysocket
from collections.abc import Callable, Mapping

import gevent
import gevent.event
import gevent.queue
from gevent import socket

from cardd.errors import ProtocolError
from cardd.esl.protocol import DISCONNECT_BODY, FrameParser, encode_api_response, encode_event, encode_reply
from cardd.sim import apps, bridge, sofia, wire
from cardd.sim.caller import Callees, Caller
from cardd.sim.channel import Identity, Leg, hangup_cause_name, new_uuid
from cardd.sim.clock import Clock, VirtualClock
from cardd.sim.transcript import Transcript

log = logging.getLogger(__name__)

# Virtual seconds between a sendmsg's +OK and its CHANNEL_EXECUTE (captured: ~20 ms).
EXEC_LATENCY = 0.02

# The dialplan applications a call runs: mod_dptools' (apps) and bridge, which runs
# the others on its B legs (execute_on_answer) and so is not imported by apps: each
# call hands apps.execute this table.
APPLICATIONS: Mapping[str, apps.App] = {**apps.APPS, "bridge": bridge.app_bridge}


class Switch:
    """A FreeSWITCH box. `virtual_clock=True` makes timers jump (see clock.py)."""

    def __init__(
        self,
        *,
        virtual_clock: bool = True,
        hostname: str = "fs1",
        core_uuid: str | None = None,
        ipv4: str = "192.0.2.2",
        ipv6: str = "2001:db8::2",
        sound_prefix: str | None = None,
        quiet: float = 0.003,
        idle_quiet: float = 0.05,
        start_epoch: float | None = None,
        socket_data: str | None = None,
        say_sound_prefix: str | None = None,
        early_linger_notice: bool = False,
        park_event: bool = True,
        sofia_setup: sofia.SofiaSetup | None = None,
        context: str | None = None,
        dialplan_vars: dict[str, str] | None = None,
    ):
        self.virtual_clock = virtual_clock
        self.identity = Identity(core_uuid or new_uuid(), hostname, ipv4, ipv6, sequence=400)
        self.sound_prefix = sound_prefix
        self.quiet = quiet
        self.idle_quiet = idle_quiet
        self.start_epoch = start_epoch
        self.sofia = sofia_setup or sofia.SofiaSetup(socket_data=socket_data or "127.0.0.1:8084 async full")
        self.socket_data = self.sofia.socket_data
        # A call transferred to its CLD string runs in cardd's context;
        # dialplan_vars: what the access number's extension `set` before that.
        self.context = context
        self.dialplan_vars = dict(dialplan_vars or {})
        # With a `languages` section, say sets sound_prefix (capture 06; 06a: none).
        self.say_sound_prefix = say_sound_prefix
        # Timing-dependent in FreeSWITCH (README facts 7, 17): the linger
        # notice right after CHANNEL_HANGUP instead of after HANGUP_COMPLETE,
        # and whether the socket app's CHANNEL_PARK is seen.
        self.early_linger_notice = early_linger_notice
        self.park_event = park_event
        self._session_id = 0
        self._legs: dict[str, tuple[SimCall, Leg]] = {}
        self.inbound: list = []  # inbound ESL listeners (cardd.sim.inbound)
        # Global on_reporting state handlers (cardd.sim.cdr.JsonCdrPoster):
        # run at a leg's CS_REPORTING, before its CHANNEL_HANGUP_COMPLETE.
        self.cdr_reporters: list = []

    # --- the switch's channels (api commands reach every call) ---------------
    def register(self, call: SimCall, leg: Leg) -> None:
        self._legs[leg.uuid] = (call, leg)

    def unregister(self, leg: Leg) -> None:
        self._legs.pop(leg.uuid, None)

    def find(self, uuid: str) -> tuple[SimCall, Leg] | None:
        found = self._legs.get(uuid)
        return found if found is not None and found[1].alive else None

    def api(self, line: str) -> str:
        """An api command (outbound `api`, `bgapi`, or the inbound socket)."""
        cmd, _, args = line.strip().partition(" ")
        argv = args.split(" ") if args else []
        found = self.find(argv[0]) if argv else None
        call, leg = found if found else (None, None)
        if cmd == "uuid_getvar":
            if leg is None:
                return "-ERR No such channel!\n"
            value = leg.get_var(argv[1]) if len(argv) > 1 else None
            return value if value is not None else "_undef_"
        if cmd == "uuid_setvar":
            if leg is None:
                return "-ERR No such channel!\n"
            if len(argv) < 2:
                return "-USAGE: <uuid> <var> [value]\n"
            leg.set_var(argv[1], " ".join(argv[2:]) or None)
            return "+OK\n"
        if cmd == "uuid_exists":
            # switch_ivr_uuid_exists -> switch_core_session_locate -> read lock,
            # which fails once `switch_channel_down_nosig(session->channel)`
            # (state >= CS_HANGUP, switch_core_rwlock.c): a leg hung up but
            # still reporting (posting its CDR) does not exist any more.
            return "true" if leg is not None else "false"
        if cmd == "uuid_kill":
            if call is None or leg is None:
                return "-ERR No such channel!\n"
            cause = hangup_cause_name(argv[1] if len(argv) > 1 else "NORMAL_CLEARING")
            if leg is call.a:
                call.clock.call_later(0, lambda: call.hangup_a(cause, remote=False))
            else:
                call.clock.call_later(0, lambda: apps.hangup_b(call, leg, cause))
            return "+OK\n"
        if cmd == "uuid_dump":
            if call is None or leg is None:
                return "-ERR No such channel!\n"
            hdrs = leg.event("CHANNEL_DATA", call.now(), calling=("mod_commands.c", "uuid_dump_function", "6468"))
            return "".join(f"{k}: {wire.encode_value(v)}\n" for k, v in hdrs) + "\n"
        if cmd == "show" and argv[:1] == ["channels"] and argv[1:2] == ["count"]:
            n = sum(1 for _, lg in self._legs.values() if lg.alive)
            return f"\n{n} total.\n"
        if cmd == "switchname":
            # mod_commands switchname_api_function:
            #   stream->write_function(stream, "%s", switch_core_get_switchname());
            return self.identity.hostname
        if cmd == "status":
            return "UP 0 years, 0 days\nFreeSWITCH (simulated) is ready\n"
        return f"-ERR {cmd} Command not found!\n"

    def listen_inbound(self, host: str = "127.0.0.1", port: int = 0, password: str = "ClueCon"):
        """Serve the inbound Event Socket (as FreeSWITCH's port 8021 does)."""
        from cardd.sim.inbound import InboundServer

        return InboundServer(self, host, port, password)

    def next_session_id(self) -> int:
        self._session_id += 1
        return self._session_id

    def new_clock(self, start: float | None = None) -> Clock:
        start = self.start_epoch if start is None else start
        if self.virtual_clock:
            return VirtualClock(start, quiet=self.quiet, idle_quiet=self.idle_quiet)
        return Clock(start)

    def call(
        self, host: str, port: int, caller: Caller | None = None, callees: Callees = None, *, a_uuid: str | None = None
    ) -> SimCall:
        """Start a call: connect to the daemon and serve it (in a greenlet)."""
        # Connect first so an unreachable daemon raises OSError here.
        sock = socket.create_connection((host, port))
        call = SimCall(self, caller or Caller(), callees, a_uuid=a_uuid)
        g = gevent.spawn(call.serve, sock)
        g.name = f"sim-call-{call.a.uuid[:8]}"
        call._greenlets.append(g)
        return call


class SimCall:
    """One outbound-socket session: the caller's A leg and its B legs."""

    def __init__(
        self,
        switch: Switch,
        caller: Caller,
        callees: Callees,
        *,
        a_uuid: str | None = None,
        clock: Clock | None = None,
        a_leg: Leg | None = None,
    ):
        self.switch = switch
        self.identity = switch.identity
        self.caller = caller
        self.callees = callees
        self.clock = clock or switch.new_clock()
        self.t0 = self.clock.now()
        self.transcript = Transcript()
        self.a = a_leg or self._new_a_leg(a_uuid or new_uuid())
        self.transcript.a_uuid = self.a.uuid
        self.legs: dict[str, Leg] = {self.a.uuid: self.a}
        switch.register(self, self.a)
        # subscription state (mod_event_socket listener)
        self.myevents = False
        self.event_names: set[str] = set()
        self.event_all = False
        self.filters: list[tuple[str, str]] = []
        self.linger: bool = False
        self.linger_time: int = -1
        self.connected = False
        self.closed = gevent.event.Event()
        self.done = gevent.event.Event()
        # execution state of the A leg
        self.queue: gevent.queue.Queue = gevent.queue.Queue()
        self.applications = APPLICATIONS
        self.current_app: apps.Running | None = None
        self.last_response = "_none_"
        self.app_counts: dict[str, int] = {}
        self.digits_index = 0
        self.playback_index = 0
        self.bridge_index = 0
        # realm -> (realm, digits, action, value, DTMF leg, exec leg): bind_digit_action's arguments
        self.digit_bindings: dict[str, list[tuple[str, str, str, str, str, str]]] = {}
        self.digit_realm: str | None = None
        self.digit_buffer = ""
        self.bridge: apps.BridgeState | None = None
        self.a_timers: list = []
        self.teardown_started = False
        self.parked_once = False
        self.emit_park = switch.park_event
        self.sched_id = 0
        self._closing = False
        self.socket_app_done = False
        # The socket app parks the channel while it serves the socket.
        self.parked = True
        words = switch.socket_data.split()
        # `socket <host:port> async full` (mod_event_socket LFLAG_ASYNC/FULL)
        self.async_mode = "async" in words[1:]
        self.full_control = "full" in words[1:]
        # uuids for B legs without origination_uuid (a replay seeds them)
        self.b_uuids: list[str] = []
        self.random = random.Random(self.a.uuid)
        # uuid_recv_dtmf in the captures gives APP; a real phone's RFC 2833 gives RTP.
        self.dtmf_source = "RTP"
        # run after the current A app's EXECUTE_COMPLETE (B's teardown, fact 14)
        self.post_complete: list = []
        # output buffer: emission never blocks, so events keep their order
        self._out = bytearray()
        self._out_ready = gevent.event.Event()
        self._sock: socket.socket | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self.on_event: Callable[[list[tuple[str, str]]], None] | None = None
        # B legs' own threads while they report (post their CDR)
        self.reporting: list[gevent.Greenlet] = []

    # --- set-up -------------------------------------------------------------
    def _new_a_leg(self, a_uuid: str) -> Leg:
        c = self.caller
        sw = self.switch
        # The channel was created (INVITE) a moment before the socket app ran.
        return sofia.inbound_leg(
            self.identity,
            sw.sofia,
            uuid=a_uuid,
            cli=c.cli,
            destination=c.destination,
            now_us=int(self.clock.now() * 1_000_000) - 20_000,
            session_id=sw.next_session_id(),
            rnd=random.Random(a_uuid),
            cid_name=c.name,
            rdnis=c.rdnis,
            context=sw.context,
            dialplan_vars=sw.dialplan_vars,
        )

    def now(self) -> float:
        return self.clock.now()

    def rel(self) -> float:
        return self.clock.now() - self.t0

    def us(self) -> int:
        return int(round(self.clock.now() * 1_000_000))

    def serve(self, sock: socket.socket) -> None:
        """Serve one connected socket (already connected to the daemon)."""
        self._sock = sock
        try:
            sock.setsockopt(pysocket.IPPROTO_TCP, pysocket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.connected = True
        self.transcript.add(
            self.rel(), "A", "connect", uuid=self.a.uuid, cli=self.caller.cli, destination=self.caller.destination
        )
        writer = gevent.spawn(self._writer, sock)
        runner = gevent.spawn(self._runner)
        self._greenlets += [writer, runner]
        if self.caller.hangup_after is not None:
            self.a_timers.append(
                self.clock.call_later(self.caller.hangup_after, lambda: self.hangup_a("NORMAL_CLEARING", remote=True))
            )
        try:
            self._reader(sock)
        finally:
            self._close_socket("daemon-close")

    # --- output -------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self._sock is None or not self.connected:
            return
        self._out += data
        self._out_ready.set()
        self.clock.touch()

    def _writer(self, sock: socket.socket) -> None:
        while True:
            self._out_ready.wait()
            self._out_ready.clear()
            if self._out:
                data = bytes(self._out)
                del self._out[:]
                try:
                    sock.sendall(data)
                except OSError:
                    self.connected = False
                    return
            if not self.connected and not self._out:
                return

    def subscribed(self, headers: list[tuple[str, str]], name: str) -> bool:
        uid = None
        for k, v in headers:
            if k == "Unique-ID":
                uid = v
                break
        if self.myevents:
            # myevents: only the controlled channel's events (README fact 12).
            return uid == self.a.uuid and (self.event_all or not self.event_names or name in self.event_names or True)
        if not (self.event_all or name in self.event_names):
            return False
        if self.filters:
            hd = dict(headers)
            return any(hd.get(h) == v for h, v in self.filters)
        return True

    def emit(self, leg: Leg, headers: list[tuple[str, str]]) -> None:
        name = headers[0][1]
        if self.on_event is not None:
            self.on_event(headers)
        for listener in self.switch.inbound:
            listener.offer(name, headers)
        if self.connected and self.subscribed(headers, name):
            self.send(wire.encode_event(headers))

    def fire(self, leg: Leg, name: str, **kw) -> None:
        self.emit(leg, leg.event(name, self.now(), **kw))

    # --- input --------------------------------------------------------------
    def _reader(self, sock: socket.socket) -> None:
        parser = FrameParser(commands=True)
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                return
            self.clock.touch()
            parser.feed(data)
            try:
                for frame in parser:
                    self.handle_command(frame.headers.raw)
                    if not self.connected:
                        return
            except ProtocolError as exc:
                self.transcript.errors.append(f"protocol error: {exc}")
                return

    # Commands mod_event_socket serves an outbound socket without `full`.
    _SINGLE_CHANNEL = frozenset(
        ("connect", "exit", "filter", "resume", "getvar", "myevents", "divert_events", "sendmsg")
    )

    def handle_command(self, raw: dict[str, str]) -> None:
        cmd = raw.get("Command", "")
        self.clock.touch()
        verb, _, rest = cmd.partition(" ")
        verb = verb.lower()
        handler = getattr(self, "cmd_" + verb, None)
        if not self.full_control and verb not in self._SINGLE_CHANNEL:
            handler = None
        if handler is None:
            self.send(encode_reply("-ERR command not found"))
            return
        handler(rest.strip(), raw)

    def cmd_connect(self, rest: str, raw) -> None:
        headers = self.a.data_headers(self.now())
        text = "".join(f"{k}: {wire.encode_value(v)}\n" for k, v in headers)
        text += (
            "Content-Type: command/reply\nReply-Text: %2BOK%0A\n"
            f"Socket-Mode: {'async' if self.async_mode else 'static'}\n"
            f"Control: {'full' if self.full_control else 'single-channel'}\n\n"
        )
        self.send(text.encode("utf-8"))

    def cmd_myevents(self, rest: str, raw) -> None:
        if self.myevents:
            self.send(encode_reply("-ERR aready enabled."))
            return
        self.myevents = True
        self.send(encode_reply("+OK Events Enabled"))
        self._maybe_park()

    def cmd_event(self, rest: str, raw) -> None:
        parts = rest.split()
        if parts and parts[0].lower() in ("plain", "json", "xml"):
            fmt = parts.pop(0).lower()
        else:
            fmt = "plain"
        for name in parts:
            if name.upper() == "ALL":
                self.event_all = True
            else:
                self.event_names.add(name.upper())
        self.send(encode_reply(f"+OK event listener enabled {fmt}"))

    def cmd_filter(self, rest: str, raw) -> None:
        header, _, value = rest.partition(" ")
        if header.lower() == "delete":
            self.filters = [f for f in self.filters if f[1] != value and f[0] != value]
            self.send(encode_reply(f"+OK filter deleted. [{value}]"))
            return
        self.filters.append((header, value))
        self.send(encode_reply(f"+OK filter added. [{header}]=[{value}]"))

    def cmd_linger(self, rest: str, raw) -> None:
        self.linger = True
        if rest.strip().lstrip("-").isdigit():
            self.linger_time = int(rest)
            self.send(encode_reply(f"+OK will linger {self.linger_time} seconds"))
        else:
            self.linger_time = -1
            self.send(encode_reply("+OK will linger"))

    def cmd_nolinger(self, rest: str, raw) -> None:
        self.linger = False
        self.send(encode_reply("+OK will not linger"))

    def cmd_noevents(self, rest: str, raw) -> None:
        if not (self.myevents or self.event_all or self.event_names):
            self.send(encode_reply("-ERR not listening for events"))
            return
        self.myevents = False
        self.event_names.clear()
        self.event_all = False
        self.send(encode_reply("+OK no longer listening for events"))

    def cmd_getvar(self, rest: str, raw) -> None:
        value = self.a.get_var(rest.strip()) if self.a.alive else None
        self.send(encode_reply(value if value is not None else "-ERR command not found"))

    def cmd_exit(self, rest: str, raw) -> None:
        self.send(encode_reply("+OK bye"))
        self.transcript.closed_by = self.transcript.closed_by or "exit"
        self._disconnect()

    def _sendmsg_other(self, target: str, command: str, hd: dict[str, str], raw) -> None:
        """sendmsg <uuid> to another channel of the switch (a B leg)."""
        found = self.switch.find(target)
        if found is None:
            self.send(encode_reply(f"-ERR invalid session id [{target}]"))
            return
        self.send(encode_reply("+OK"))
        call, leg = found
        if command == "hangup":
            cause = hangup_cause_name(hd.get("hangup-cause", "NORMAL_CLEARING"))
            if leg is call.a:
                call.clock.call_later(EXEC_LATENCY, lambda: call.hangup_a(cause, remote=False))
            else:
                call.clock.call_later(EXEC_LATENCY, lambda: apps.hangup_b(call, leg, cause))
        elif command == "execute":
            item = apps.Pending(
                hd.get("execute-app-name", ""),
                hd.get("execute-app-arg", ""),
                raw.get("Event-UUID") or hd.get("event-uuid") or new_uuid(),
                hd.get("event-lock", "").lower() == "true",
            )
            if leg is call.a:
                call.queue.put(item)
            else:
                gevent.spawn(apps.execute, call, leg, item)

    def cmd_sendmsg(self, rest: str, raw) -> None:
        hd = {k.lower(): v for k, v in raw.items()}
        target = rest.strip() or hd.get("session-id") or self.a.uuid
        command = hd.get("call-command", "").lower()
        if target != self.a.uuid:
            self._sendmsg_other(target, command, hd, raw)
            return
        self.send(encode_reply("+OK"))
        if not self.a.alive:
            # The channel is gone (10a): +OK, and nothing follows.
            return
        if command == "execute":
            app = hd.get("execute-app-name", "")
            arg = hd.get("execute-app-arg", "")
            loops = int(hd.get("loops", "1") or 1)
            lock = hd.get("event-lock", "").lower() in ("true", "1", "yes")
            ev_uuid = raw.get("Event-UUID") or hd.get("event-uuid") or new_uuid()
            self.queue.put(apps.Pending(app, arg, ev_uuid, lock, loops))
            self._maybe_park()
        elif command == "hangup":
            cause = hangup_cause_name(hd.get("hangup-cause", "NORMAL_CLEARING"))
            self.clock.call_later(EXEC_LATENCY, lambda: self.hangup_a(cause, remote=False))

    def cmd_api(self, rest: str, raw) -> None:
        self.send(encode_api_response(self.api(rest)))

    def cmd_bgapi(self, rest: str, raw) -> None:
        job = raw.get("Job-UUID") or new_uuid()
        self.send(encode_reply(f"+OK Job-UUID: {job}", {"Job-UUID": job}))
        body = self.api(rest)
        if self.event_all or "BACKGROUND_JOB" in self.event_names:
            hdrs = [
                ("Event-Name", "BACKGROUND_JOB"),
                ("Core-UUID", self.identity.core_uuid),
                ("Job-UUID", job),
                ("Job-Command", rest.partition(" ")[0]),
                ("Job-Command-Arg", rest.partition(" ")[2]),
            ]
            self.send(encode_event(hdrs, body.encode("utf-8")))

    def api(self, line: str) -> str:
        self.transcript.add(self.rel(), "A", "api", command=line.strip())
        return self.switch.api(line)

    def _maybe_park(self) -> None:
        """CHANNEL_PARK of the socket app's park loop: once, right after a
        myevents subscription. Its presence is timing-dependent (README fact
        7); no capture subscribed with `event plain` ever saw it (08b, 14-20)."""
        if self.parked_once or not self.emit_park or not self.myevents:
            return
        self.parked_once = True
        self.fire(self.a, "CHANNEL_PARK")

    # --- execution ----------------------------------------------------------
    def _runner(self) -> None:
        while True:
            self.clock.idle = True
            item = self.queue.get()
            self.clock.idle = False
            if item is None:
                break
            if not self.a.alive:
                break
            self.clock.sleep(EXEC_LATENCY)
            if not self.a.alive:
                break
            for _ in range(max(item.loops, 1)):
                apps.execute(self, self.a, item)
                if not self.a.alive:
                    break
            if not self.a.alive:
                break
            if self._sock is not None and not self.connected and self.queue.empty():
                # The daemon's socket is gone and the app returned: the socket
                # app ends, then the dialplan has nothing left (capture 16).
                self._socket_app_complete()
                self.hangup_a("NORMAL_CLEARING", remote=False)
                break
        self.teardown_a()

    def hangup_a(self, cause: str, *, remote: bool) -> None:
        """The caller hung up (remote=True) or the switch hung A up."""
        a = self.a
        if not a.alive:
            return
        a.alive = False
        a.hangup_remote = remote
        a.hangup_cause = cause
        a.answer_state = "hangup"
        a.state_number = 10
        a.hangup_us = self.us()
        self.transcript.hangup_cause = cause
        self.transcript.add(self.rel(), "A", "hangup", cause=cause, by="caller" if remote else "switch")
        for t in self.a_timers:
            t.cancel()
        if remote:
            # mod_sofia on the caller's BYE (11, 15)
            a.set_var("sip_term_status", "200")
            a.set_var("proto_specific_hangup_cause", "sip:200")
            a.set_var("sip_term_cause", "16")
        if self.bridge is not None and self.bridge.answered and self.bridge.b is not None and self.bridge.b.alive:
            a.set_var("last_bridge_role", "originator")
        self.fire(a, "CHANNEL_HANGUP")
        if remote:
            a.set_var("sip_hangup_disposition", "recv_bye")
        if not self.linger:
            self.send_disconnect()
        elif self.switch.early_linger_notice:
            self.send_linger_notice()
        a.wake.set()
        if self.current_app is None:
            self.queue.put(None)

    def teardown_a(self) -> None:
        if self.teardown_started:
            return
        self.teardown_started = True
        a = self.a
        if a.alive:
            self.hangup_a("NORMAL_CLEARING", remote=False)
        a.set_var("current_loop", None)
        a.set_var("total_loops", None)
        self._socket_app_complete()
        a.set_state("CS_HANGUP")
        self.fire(a, "CHANNEL_STATE", variables=False)
        a.set_state("CS_REPORTING")
        # The profile's hangup time and the HANGUP call state show from
        # CS_REPORTING on (captured).
        a.call_state = "HANGUP"
        a.profile.times["Channel-Hangup-Time"] = a.hangup_us
        self.fire(a, "CHANNEL_STATE", variables=False)
        apps.set_cdr_vars(self, a)
        # mod_json_cdr without queue-capacity posts here, in A's thread (cdr.py).
        apps.report_cdr(self, a)
        self.fire(a, "CHANNEL_HANGUP_COMPLETE", pre=[("Hangup-Cause", a.hangup_cause)])
        for leg in list(self.legs.values()):
            if leg is not a and leg.pending_destroy:
                apps.destroy_b(self, leg)
        self.switch.unregister(a)
        # From now on only the daemon acts (or the linger timer runs out).
        self.clock.idle = True
        if self.linger and self.connected:
            self.send_linger_notice()
            if self.linger_time >= 0:
                self.clock.call_later(self.linger_time + 0.1, self._linger_expired)
        self._finish()

    def park_after_bridge(self) -> None:
        a = self.a
        self._socket_app_complete()
        a.set_state("CS_PARK")
        self.fire(a, "CHANNEL_STATE", variables=False)
        self.parked = True
        self.fire(a, "CHANNEL_PARK")

    def _socket_app_complete(self) -> None:
        """CHANNEL_UNPARK (when parked) and the socket app's own
        EXECUTE_COMPLETE (once)."""
        a = self.a
        if self.parked:
            self.parked = False
            self.fire(a, "CHANNEL_UNPARK")
        if self.socket_app_done:
            return
        self.socket_app_done = True
        sock_data = self.switch.socket_data or "127.0.0.1:8084 async full"
        self.fire(
            a,
            "CHANNEL_EXECUTE_COMPLETE",
            post=[
                ("Application", "socket"),
                ("Application-Data", sock_data),
                ("Application-Response", self.last_response),
                ("Application-UUID", new_uuid()),
            ],
        )

    def _linger_expired(self) -> None:
        if self.connected:
            self.transcript.closed_by = "linger-timeout"
            self._disconnect()

    def send_linger_notice(self) -> None:
        if getattr(self, "_linger_sent", False):
            return
        self._linger_sent = True
        self.send(
            (
                f"Content-Type: text/disconnect-notice\nControlled-Session-UUID: {self.a.uuid}\n"
                f"Content-Disposition: linger\nChannel-Name: {self.a.name}\n"
                f"Linger-Time: {self.linger_time}\nContent-Length: 0\n\n"
            ).encode()
        )

    def send_disconnect(self) -> None:
        self.send(
            (
                f"Content-Type: text/disconnect-notice\nControlled-Session-UUID: {self.a.uuid}\n"
                f"Content-Disposition: disconnect\nContent-Length: {len(DISCONNECT_BODY)}\n\n"
            ).encode()
            + DISCONNECT_BODY
        )
        self.connected = False
        self._out_ready.set()
        # FreeSWITCH closes the socket right after this notice.
        if self._sock is not None and not self._closing:
            self._closing = True
            gevent.spawn(self._shutdown_sock, self._sock)

    def _disconnect(self) -> None:
        if not self.connected:
            return
        self.send_disconnect()

    def _close_socket(self, why: str) -> None:
        self.connected = False
        self._out_ready.set()
        self.closed.set()
        if self.transcript.closed_by is None:
            self.transcript.closed_by = why
        # The daemon's socket closing changes nothing for the call (16): it
        # goes on until it ends by itself; the dialplan then hangs A up.
        if self._sock is not None and not self._closing:
            self._closing = True
            gevent.spawn(self._shutdown_sock, self._sock)
        if self.a.alive and self.current_app is None and self.bridge is None:
            self.hangup_a("NORMAL_CLEARING", remote=False)

    def _shutdown_sock(self, sock: socket.socket) -> None:
        # let the writer flush what is queued
        for _ in range(100):
            if not self._out:
                break
            gevent.sleep(0.001)
        try:
            sock.shutdown(pysocket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass
        self.closed.set()

    def _finish(self) -> None:
        for leg in self.legs.values():
            if not leg.alive:
                self.switch.unregister(leg)
        self.done.set()

    # --- results ------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> Transcript:
        """Wait until the call has ended and the daemon has let go of the
        socket (exit, close, or linger expiry); returns the transcript."""
        with gevent.Timeout(timeout, TimeoutError(f"call {self.a.uuid} still running")):
            self.done.wait()
            self.closed.wait()
            # B legs still posting their CDR in their own thread (cdr.py)
            gevent.joinall(self.reporting)
        self.clock.stop()
        return self.transcript

    @property
    def a_uuid(self) -> str:
        return self.a.uuid
