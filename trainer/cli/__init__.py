"""The trainer's commands, one module each (as rtclassify/cli/); trainer/__main__.py is the group."""
