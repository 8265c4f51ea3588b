"""The ptb Application: wiring, user commands, /push and /undo conversations."""
