"""Advisory analytics: findings, health and wear from committed telemetry. It advises only:
nothing here can send a command (an import test enforces it); recommendations become
commands only when a person approves them and the safety validator passes."""
