"""dicomweb-client -> STOW-RS -> appliance -> Orthanc: an upload over HTTP reaches an
independent PACS through the forwarder, every element and pixel byte as sent, and the
same instance comes back over WADO-RS."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from appliance.forward import queue
from appliance.server import Appliance
from tests.dicomweb_helpers import Box, api_token
from tests.forward_factories import make_ct
from tests.forward_helpers import forward_config, pacs_destination
from tests.helpers import wait_for
from tests.orthanc import Orthanc
from tests.qr_helpers import Held

pytestmark = pytest.mark.interop


def test_stow_rs_upload_reaches_orthanc_identical(
    start_appliance: Callable[..., Appliance], orthanc: Orthanc
) -> None:
    dest = pacs_destination("pacs", orthanc.aet, orthanc.dicom_port)
    app = start_appliance(forward_config([dest]))
    box = Box(app, Held(), api_token(app))
    study = generate_uid()
    images = [make_ct(seed=i, study_uid=study) for i in range(4)]
    result = box.client().store_instances(images, study_instance_uid=study)
    assert len(result.ReferencedSOPSequence) == 4 and "FailedSOPSequence" not in result
    wait_for(lambda: len(orthanc.instance_uids()) == 4, timeout=30)
    stored = orthanc.instance_uids()
    for sent in images:
        got = dcmread(io.BytesIO(orthanc.instance_file(stored[sent.SOPInstanceUID])))
        assert got.PixelData == sent.PixelData
        assert got == sent  # every element of the data set
    wait_for(lambda: queue.summary(app.runtime.store)[0]["delivered"] == 4, timeout=10)
    back = box.client().retrieve_study(study)
    assert sorted(ds.SOPInstanceUID for ds in back) == sorted(ds.SOPInstanceUID for ds in images)
