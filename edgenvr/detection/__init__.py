"""Motion and tamper detection on a camera's detect stream (the motion processes) and reference views."""
