"""``python -m appliance`` runs the command line."""

from appliance.cli import main

raise SystemExit(main())
