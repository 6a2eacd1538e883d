"""Code shared by every cronbus service: models, wire messages, schedules, Consul access, bus helpers."""
