"""Pure builders of the operator's children: functions from the resource (and the operator's
configuration) to plain dicts ready to send to the API server. No I/O here."""
