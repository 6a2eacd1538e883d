"""The cronbus services (scheduler, executor, gateway) and the command that starts them."""
