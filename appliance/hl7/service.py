"""The HL7 part of the running appliance: the inbox over the runtime's store, on a listener."""

from __future__ import annotations

from typing import Any

from appliance.clock import Clock
from appliance.hl7.inbox import Inbox
from appliance.hl7.listener import Hl7Listener
from appliance.hl7.outbound import OutboundWorker, Outbox
from appliance.runtime import Runtime


class Hl7Service:
    """``[hl7]`` as one more listener of the runtime (started when ``hl7.enabled``)."""

    name = "hl7"

    def __init__(self, runtime: Runtime) -> None:
        config = runtime.config
        self.inbox = Inbox(
            runtime.store, config.hl7, application=config.dicom.ae_title, devices=config.devices,
            today=Clock(config.clinic.time_zone).today,
        )  # fmt: skip
        self.listener = Hl7Listener(config.hl7, self.inbox.handle)
        self.outbox = Outbox(runtime.store, config.hl7, application=config.dicom.ae_title)
        # Runs without [[hl7.outbound]] too: it then only clears the status events.
        self.worker = OutboundWorker(self.outbox)

    @property
    def port(self) -> int | None:
        return self.listener.port

    def start(self) -> Hl7Service:
        self.listener.start()
        self.worker.start()
        return self

    def stop(self) -> None:
        self.worker.stop()
        self.listener.stop()

    def health(self) -> dict[str, Any]:
        report = {**self.listener.health(), **self.inbox.health()}
        if self.outbox.settings.outbound:
            report["outbound"] = self.outbox.summary()
        return report
