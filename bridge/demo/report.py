"""Pure: the demo's summary block and the check that Go2Clock holds every accepted swipe once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.demo.scenario import EVERYONE, TERMINAL, Expected
from bridge.events import Action


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the demo observed once everything settled."""

    status: Mapping[str, Any]  # Store.status() for the run
    counts: Mapping[str, int]  # the go2clock dispatcher's counts (delivered, duplicate, ...)
    records: list[dict[str, Any]]  # what the fake Go2Clock stores
    checktypes: Mapping[Action, int]

    def sink_states(self) -> Mapping[str, int]:
        entry = self.status["sinks"].get("go2clock", {})
        return dict(entry.get("states", {}))

    def events(self) -> Mapping[str, int]:
        return dict(self.status["events"])

    def stored(self) -> int:
        return sum(self.events().values())

    def resends(self, expected: Expected) -> int:
        """Messages neither stored as events nor rejected: recognised as already stored."""
        return expected.messages - self.stored() - int(self.status["rejected"])

    def punches(self) -> Counter[tuple[str, str, str]]:
        action_of = {number: action.value for action, number in self.checktypes.items()}
        return Counter(
            (r["userid"], r["checktime"], action_of.get(int(r["checktype"]), r["checktype"]))
            for r in self.records
        )


def summary_lines(outcome: Outcome, expected: Expected) -> list[str]:
    events, states = outcome.events(), outcome.sink_states()
    accepted, doubles = events.get("accepted", 0), events.get("duplicate", 0)
    resends, vendor = outcome.resends(expected), outcome.counts.get("duplicate", 0)
    lines = [
        "",
        "== clockin-bridge demo: summary ==",
        f"received    {expected.messages:>3}  MQTT messages from terminal {TERMINAL} (QoS 1)",
        f"stored      {outcome.stored():>3}  events ({accepted} accepted, {doubles} double swipe)",
        (
            f"duplicates  {doubles + resends + vendor:>3}  ({doubles} double swipe, {resends} MQTT"
            f" resend, {vendor} Go2Clock already had)"
        ),
        f"rejected    {outcome.status['rejected']:>3}  (not a clock event; kept for inspection)",
        f"delivered   {states.get('delivered', 0):>3}  of {accepted} accepted events, to Go2Clock",
        (
            f"retried     {outcome.status['retried']:>3}  deliveries needed more than one attempt"
            f" ({outcome.counts.get('retry', 0)} retries)"
        ),
        f"dead        {states.get('dead', 0):>3}",
        "",
        f"Go2Clock now holds {len(outcome.records)} punches (check time, check type):",
    ]
    names = {person.userid: person.name for person in EVERYONE}
    by_person: dict[str, list[str]] = {}
    for userid, checktime, action in sorted(outcome.punches().elements()):
        by_person.setdefault(userid, []).append(f"{checktime[11:]} {action}")
    for userid, punches in by_person.items():
        lines.append(f"  {names.get(userid, '?'):<7}{userid:<6}" + "  ".join(punches))
    return lines


def problems(outcome: Outcome, expected: Expected) -> list[str]:
    """Everything that differs from a correct run; empty when the demo went as it should."""
    found = []
    held, wanted = outcome.punches(), expected.punches
    missing, extra = wanted - held, held - wanted
    if missing:
        found.append(f"Go2Clock lacks {sorted(missing.elements())}")
    if extra:
        found.append(f"Go2Clock holds extra or repeated punches {sorted(extra.elements())}")
    events, states = outcome.events(), outcome.sink_states()
    want_events = {"accepted": len(wanted), "duplicate": expected.doubles}
    if events != want_events:
        found.append(f"events by status are {events}, expected {want_events}")
    if outcome.status["rejected"] != expected.rejected:
        found.append(f"{outcome.status['rejected']} rejected, expected {expected.rejected}")
    if outcome.resends(expected) != expected.resends:
        found.append(f"{outcome.resends(expected)} resends recognised, expected {expected.resends}")
    want_states = {"delivered": len(wanted)}
    if states != want_states:
        found.append(f"go2clock deliveries by state are {states}, expected {want_states}")
    if outcome.status["retried"] < 1:
        found.append("no delivery was retried, though Go2Clock had an outage")
    return found
