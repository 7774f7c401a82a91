"""The trainer's console commands (``age-align``, ``age-train``, ``age-evaluate``, ``age-calibrate``,
``age-ensemble``, ``age-robustness``, ``age-export``): each module parses its command line and calls the
sub-package that does the work; ``command`` holds what they share."""
