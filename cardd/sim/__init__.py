"""cardd.sim: a FreeSWITCH 1.10 simulator speaking the outbound Event Socket.

from cardd.sim import Switch, Caller, Callee
call = Switch().call(host, port, Caller(cli="15551234567", destination="cc.en",
                                        digits=["1234#"]),
                     {"442071234567": Callee(answer_after=2, talk=60)})
transcript = call.wait(30)
"""

from cardd.sim.caller import Callee, Caller
from cardd.sim.switch import SimCall, Switch
from cardd.sim.transcript import BridgeOutcome, Entry, Transcript

__all__ = ["Switch", "SimCall", "Caller", "Callee", "Transcript", "Entry", "BridgeOutcome"]
