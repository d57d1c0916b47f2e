"""The TUI's screens: agents (home), agent, approvals (+ the modal), costs, models, alarms, help."""
