#!/usr/bin/env bash
# Install npm's @aws-cdk/aws-service-spec, the current CloudFormation
# resource specification (db.json.gz) that tests/deploy/cfn_check.py checks
# templates against, into build/npm (once; make clean removes it), and
# print the path of db.json.gz. Needs npm (Debian: nodejs/npm).
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/../.."
spec=build/npm/node_modules/@aws-cdk/aws-service-spec/db.json.gz
if [ ! -s "$spec" ]; then
    command -v npm >/dev/null 2>&1 || {
        echo "fetch-spec.sh: npm not found (apt-get install npm)" >&2
        exit 1
    }
    npm install --prefix build/npm --no-audit --no-fund --loglevel=error \
        '@aws-cdk/aws-service-spec@^0.1.216' >&2
fi
[ -s "$spec" ] || { echo "fetch-spec.sh: $spec missing" >&2; exit 1; }
echo "$PWD/$spec"
