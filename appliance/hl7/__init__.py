"""HL7 v2 orders from a RIS over MLLP into the worklist (docs/hl7.md)."""
