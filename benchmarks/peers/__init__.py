"""The schedulers cronbus is compared with, driven the same way as cronbus in the same run."""
