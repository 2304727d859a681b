"""The CLI's exit codes: 0 success, 1 something was recorded as an error (a damaged stream, an unreadable
image, an input in the errors table), 2 usage or configuration (unknown model, missing weights)."""

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
