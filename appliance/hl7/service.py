"""The HL7 part of the running appliance: the inbox over the runtime's store, on a listener."""

from __future__ import annotations

from typing import Any

from appliance.hl7.inbox import Inbox
from appliance.hl7.listener import Hl7Listener


class Hl7Service:
    """``[hl7]`` as one more listener of the runtime (started when ``hl7.enabled``)."""

    name = "hl7"

    def __init__(self, runtime: Any) -> None:
        config = runtime.config
        self.inbox = Inbox(runtime.store, config.hl7, application=config.dicom.ae_title)
        self.listener = Hl7Listener(config.hl7, self.inbox.handle)

    @property
    def port(self) -> int | None:
        return self.listener.port

    def start(self) -> Hl7Service:
        self.listener.start()
        return self

    def stop(self) -> None:
        self.listener.stop()

    def health(self) -> dict[str, Any]:
        return {**self.listener.health(), **self.inbox.health()}
