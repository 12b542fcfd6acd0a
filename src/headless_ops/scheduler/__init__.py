"""The claim loop: due operations run at their time, one at a time per device."""
