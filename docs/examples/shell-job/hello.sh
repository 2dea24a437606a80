#!/bin/sh
# Answers with a greeting for ARG_NAME (from the call's JSON body) and the job type serving it.
printf '{"message": "%s, %s", "job_type": "%s", "identity": "%s"}\n' \
  "$SHELL_JOB_GREETING" "${ARG_NAME:-world}" "$JOB_TYPE_VERSION" "$SHELL_JOB_IDENTITY"
