#!/usr/bin/env python3
"""cfn_check: offline checks of CloudFormation templates.

No AWS account is reachable from CI, so this reads the templates the way
CloudFormation would and checks them against the current resource
specification, the one npm's @aws-cdk/aws-service-spec ships (db.json.gz;
tests/deploy/fetch-spec.sh installs it under build/npm):

  template   top-level sections, parameter types and defaults (against
             AllowedValues, AllowedPattern, Min/Max), resource attributes
             (DependsOn, Condition, CreationPolicy, UpdatePolicy, ...)
  spec       resource types, property names, required properties, value
             types (string, integer, boolean, list, object) and allowed
             values, recursively through nested property types
  refs       Ref, Fn::GetAtt (attribute names from the spec), ${} in
             Fn::Sub, Fn::If / Condition, Fn::FindInMap targets, and the
             argument shapes of every intrinsic function
  policy     sensornet's rules: no literal AMI id, no sensor/dashboard/SSH/
             database port open to the world, nothing retained or
             snapshotted on delete-stack, IMDSv2 required, no literal
             passwords, every CreationPolicy signalled by its UserData, the
             template fits --template-body (51,200 bytes)
  userdata   each UserData rendered (Fn::Sub with parameter defaults and
             placeholders) and passed through shellcheck and bash -n; at most
             16 KiB, starting with #!

  python3 tests/deploy/cfn_check.py [--spec db.json.gz] [--no-shellcheck]
                                    [--keep-userdata DIR] TEMPLATE...

Prints one line per finding (file: rule: path: message) and exits 1 if
there is any. tests/integ/test_deploy.py imports it.
SPDX-License-Identifier: MIT
"""
import argparse
import difflib
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SPEC_PATH = os.path.join(ROOT, "build", "npm", "node_modules", "@aws-cdk",
                         "aws-service-spec", "db.json.gz")

# ---------------------------------------------------------------------------
# Loading: YAML with CloudFormation's short-form tags, duplicate keys refused

SHORT_TAGS = {
    "Ref": "Ref", "Condition": "Condition", "GetAtt": "Fn::GetAtt",
    "Base64": "Fn::Base64", "Cidr": "Fn::Cidr", "And": "Fn::And",
    "Equals": "Fn::Equals", "If": "Fn::If", "Not": "Fn::Not",
    "Or": "Fn::Or", "FindInMap": "Fn::FindInMap", "GetAZs": "Fn::GetAZs",
    "ImportValue": "Fn::ImportValue", "Join": "Fn::Join",
    "Select": "Fn::Select", "Split": "Fn::Split", "Sub": "Fn::Sub",
    "Transform": "Fn::Transform", "Length": "Fn::Length",
    "ToJsonString": "Fn::ToJsonString", "Contains": "Fn::Contains",
    "EachMemberEquals": "Fn::EachMemberEquals",
    "EachMemberIn": "Fn::EachMemberIn", "RefAll": "Fn::RefAll",
    "ValueOf": "Fn::ValueOf", "ValueOfAll": "Fn::ValueOfAll",
}


class TemplateError(Exception):
    pass


class CfnLoader(yaml.SafeLoader):
    """SafeLoader plus the short-form tags (!Ref, !Sub, ...); a key given
    twice in one mapping is an error (YAML would keep the last silently)."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    out = {}
    for knode, vnode in node.value:
        key = loader.construct_object(knode, deep=deep)
        if key in out:
            raise TemplateError("line %d: duplicate key %r"
                                % (knode.start_mark.line + 1, key))
        out[key] = loader.construct_object(vnode, deep=deep)
    return out


def _make_tag(fn):
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            v = loader.construct_scalar(node)
            if fn == "Fn::GetAtt":
                if "." not in v:
                    raise TemplateError("line %d: !GetAtt %r: want "
                                        "Resource.Attribute"
                                        % (node.start_mark.line + 1, v))
                v = v.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            v = loader.construct_sequence(node, deep=True)
        else:
            v = _construct_mapping(loader, node, deep=True)
        return {fn: v}
    return construct


CfnLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
for _short, _fn in SHORT_TAGS.items():
    CfnLoader.add_constructor("!" + _short, _make_tag(_fn))


def load_template(text):
    try:
        return yaml.load(text, Loader=CfnLoader)
    except yaml.YAMLError as e:
        raise TemplateError("not valid YAML: %s" % e)


# ---------------------------------------------------------------------------
# The resource specification

class Spec:
    """Resource types, their properties and attributes, and the property
    types, from @aws-cdk/aws-service-spec's db.json.gz."""

    def __init__(self, path=None):
        path = path or os.environ.get("SENSORNET_CFN_SPEC") or SPEC_PATH
        with gzip.open(path, "rt", encoding="utf-8") as f:
            schema = json.load(f)["schema"]
        self.path = path
        self.resources = {r["cloudFormationType"]: r
                          for r in schema["resource"]["entities"]}
        self.types = {t["$id"]: t
                      for t in schema["typeDefinition"]["entities"]}

    def typedef(self, ref):
        return self.types[ref["$ref"]]


# ---------------------------------------------------------------------------
# The checks

TOP_LEVEL = {"AWSTemplateFormatVersion", "Description", "Metadata",
             "Parameters", "Rules", "Mappings", "Conditions", "Transform",
             "Resources", "Outputs"}
PSEUDO = {"AWS::AccountId": "scalar", "AWS::NotificationARNs": "list",
          "AWS::NoValue": "novalue", "AWS::Partition": "scalar",
          "AWS::Region": "scalar", "AWS::StackId": "scalar",
          "AWS::StackName": "scalar", "AWS::URLSuffix": "scalar"}
PARAM_KEYS = {"Type", "Default", "Description", "AllowedValues",
              "AllowedPattern", "ConstraintDescription", "MaxLength",
              "MinLength", "MaxValue", "MinValue", "NoEcho"}
PARAM_TYPE = re.compile(
    r"^(String|Number|List<Number>|CommaDelimitedList"
    r"|AWS::EC2::[A-Za-z]+::[A-Za-z]+|List<AWS::EC2::[A-Za-z]+::[A-Za-z]+>"
    r"|AWS::Route53::HostedZone::Id|List<AWS::Route53::HostedZone::Id>"
    r"|AWS::SSM::Parameter::Name"
    r"|AWS::SSM::Parameter::Value<[A-Za-z0-9:<>]+>)$")
RESOURCE_KEYS = {"Type", "Properties", "DependsOn", "Condition",
                 "CreationPolicy", "DeletionPolicy", "UpdatePolicy",
                 "UpdateReplacePolicy", "Metadata"}
DELETION_POLICIES = {"Delete", "Retain", "RetainExceptOnCreate", "Snapshot"}
CREATION_POLICY = {"ResourceSignal": {"Count", "Timeout"},
                   "AutoScalingCreationPolicy":
                       {"MinSuccessfulInstancesPercent"},
                   "StartFleet": None}
UPDATE_POLICY = {
    "AutoScalingRollingUpdate": {
        "MaxBatchSize", "MinActiveInstancesPercent", "MinInstancesInService",
        "MinSuccessfulInstancesPercent", "PauseTime", "SuspendProcesses",
        "WaitOnResourceSignals"},
    "AutoScalingReplacingUpdate": {"WillReplace"},
    "AutoScalingScheduledAction": {"IgnoreUnmodifiedGroupSizeProperties"},
    "CodeDeployLambdaAliasUpdate": None, "EnableVersionUpgrade": None,
    "UseOnlineResharding": None}
ISO_DURATION = re.compile(r"^PT(?=\d)(\d+H)?(\d+M)?(\d+S)?$")
# Functions valid in Rules only.
RULE_FUNCS = {"Fn::Contains", "Fn::EachMemberEquals", "Fn::EachMemberIn",
              "Fn::RefAll", "Fn::ValueOf", "Fn::ValueOfAll"}
CONDITION_FUNCS = {"Fn::And", "Fn::Equals", "Fn::Not", "Fn::Or"}
FUNCS = ({"Fn::Base64", "Fn::Cidr", "Fn::FindInMap", "Fn::GetAtt",
          "Fn::GetAZs", "Fn::If", "Fn::ImportValue", "Fn::Join",
          "Fn::Select", "Fn::Split", "Fn::Sub", "Fn::Transform",
          "Fn::Length", "Fn::ToJsonString"} | CONDITION_FUNCS | RULE_FUNCS)

# sensornet policy
AMI_ID = re.compile(r"\bami-[0-9a-f]{8,}\b")
WORLD = {"0.0.0.0/0", "::/0"}
PROTECTED_PORTS = {22: "SSH", 5000: "sensor", 5432: "PostgreSQL",
                   8080: "dashboard"}
# Resource types whose DeletionPolicy (and UpdateReplacePolicy) default to
# Snapshot: delete-stack would leave a snapshot behind unless told Delete.
SNAPSHOT_BY_DEFAULT = {"AWS::RDS::DBInstance", "AWS::RDS::DBCluster",
                       "AWS::EC2::Volume", "AWS::ElastiCache::CacheCluster",
                       "AWS::ElastiCache::ReplicationGroup",
                       "AWS::Neptune::DBCluster", "AWS::DocDB::DBCluster",
                       "AWS::Redshift::Cluster"}
TEMPLATE_BODY_MAX = 51200
USERDATA_MAX = 16384
SCALAR_TYPES = {"string", "integer", "number", "boolean", "date-time"}


def intrinsic(v):
    """The function name if v is an intrinsic function call, else None."""
    if isinstance(v, dict) and len(v) == 1:
        k = next(iter(v))
        if k == "Ref" or k == "Condition" or k.startswith("Fn::"):
            return k
    return None


def is_novalue(v):
    return isinstance(v, dict) and v == {"Ref": "AWS::NoValue"}


def is_scalar(v):
    return isinstance(v, (str, int, float, bool))


def suggest(name, names):
    m = difflib.get_close_matches(name, list(names), 1, 0.7)
    return " (did you mean %s?)" % m[0] if m else ""


class Finding:
    def __init__(self, rule, path, message):
        self.rule, self.path, self.message = rule, path, message

    def __str__(self):
        return "%s: %s: %s" % (self.rule, self.path, self.message)

    def __repr__(self):
        return "Finding(%s)" % self


class Checker:
    """Checks one template; findings accumulate in self.findings."""

    def __init__(self, spec, text, name="template", shellcheck=True,
                 keep_userdata=None):
        self.spec = spec
        self.text = text
        self.name = name
        self.shellcheck = shellcheck
        self.keep_userdata = keep_userdata
        self.findings = []
        self.userdata = {}  # logical id -> rendered script
        try:
            self.t = load_template(text)
        except TemplateError as e:
            self.t = None
            self.err("yaml", name, str(e))
            return
        if not isinstance(self.t, dict):
            self.err("template", name, "not a mapping")
            self.t = None
            return
        self.params = self.t.get("Parameters") or {}
        self.resources = self.t.get("Resources") or {}
        self.conditions = self.t.get("Conditions") or {}
        self.mappings = self.t.get("Mappings") or {}

    def err(self, rule, path, message):
        self.findings.append(Finding(rule, path, message))

    def run(self):
        if self.t is None:
            return self.findings
        self.check_top()
        self.check_parameters()
        self.check_mappings()
        self.check_conditions()
        self.check_rules()
        self.check_resources()
        self.check_outputs()
        self.check_policy()
        self.check_userdata()
        return self.findings

    # ---- sections --------------------------------------------------------

    def check_top(self):
        for k in self.t:
            if k not in TOP_LEVEL:
                self.err("template", k, "unknown top-level section"
                         + suggest(k, TOP_LEVEL))
        v = self.t.get("AWSTemplateFormatVersion")
        if v is not None and v != "2010-09-09":
            self.err("template", "AWSTemplateFormatVersion",
                     "must be the string 2010-09-09, not %r" % (v,))
        if not isinstance(self.t.get("Resources"), dict) or \
                not self.t["Resources"]:
            self.err("template", "Resources", "missing or empty")
        if "Transform" in self.t:
            self.err("template", "Transform",
                     "transforms are not checked by this tool")
        for sect in ("Parameters", "Mappings", "Conditions", "Outputs",
                     "Rules"):
            if sect in self.t and not isinstance(self.t[sect], dict):
                self.err("template", sect, "must be a mapping")
        names = {}
        for sect in ("Parameters", "Resources"):
            for n in self.t.get(sect) or {}:
                if n in names:
                    self.err("template", "%s.%s" % (sect, n),
                             "name also used in %s" % names[n])
                names[n] = sect
                if not re.fullmatch(r"[A-Za-z0-9]+", str(n)):
                    self.err("template", "%s.%s" % (sect, n),
                             "logical ids are alphanumeric")

    def check_parameters(self):
        for name, p in self.params.items():
            path = "Parameters." + name
            if not isinstance(p, dict):
                self.err("parameter", path, "must be a mapping")
                continue
            for k in p:
                if k not in PARAM_KEYS:
                    self.err("parameter", "%s.%s" % (path, k),
                             "unknown parameter attribute"
                             + suggest(k, PARAM_KEYS))
            ptype = p.get("Type")
            if not isinstance(ptype, str) or not PARAM_TYPE.match(ptype):
                self.err("parameter", path + ".Type",
                         "invalid parameter type %r" % (ptype,))
                continue
            if "Default" in p:
                self.check_param_value(path + ".Default", p, p["Default"])
            for v in p.get("AllowedValues") or []:
                self.check_param_value(path + ".AllowedValues", p, v,
                                       allowed=False)

    def check_param_value(self, path, p, value, allowed=True):
        ptype = p["Type"]
        if not is_scalar(value) or isinstance(value, bool):
            self.err("parameter", path, "must be a string or number")
            return
        value = str(value)
        if ptype == "Number":
            try:
                num = float(value)
            except ValueError:
                self.err("parameter", path, "%r is not a number" % value)
                return
            if "MinValue" in p and num < float(p["MinValue"]):
                self.err("parameter", path, "%s < MinValue" % value)
            if "MaxValue" in p and num > float(p["MaxValue"]):
                self.err("parameter", path, "%s > MaxValue" % value)
        if allowed and "AllowedValues" in p and \
                value not in [str(a) for a in p["AllowedValues"]]:
            self.err("parameter", path, "%r is not in AllowedValues" % value)
        pat = p.get("AllowedPattern")
        if pat is not None and ptype in ("String", "CommaDelimitedList"):
            try:
                if not re.fullmatch(pat, value):
                    self.err("parameter", path,
                             "%r does not match AllowedPattern" % value)
            except re.error as e:
                self.err("parameter", path[:path.rfind(".")]
                         + ".AllowedPattern", "bad pattern: %s" % e)
        if "MinLength" in p and len(value) < int(p["MinLength"]):
            self.err("parameter", path, "shorter than MinLength")
        if "MaxLength" in p and len(value) > int(p["MaxLength"]):
            self.err("parameter", path, "longer than MaxLength")

    def check_mappings(self):
        for name, m in self.mappings.items():
            if not isinstance(m, dict):
                self.err("mapping", "Mappings." + name, "must be a mapping")
                continue
            for k, second in m.items():
                if not isinstance(second, dict):
                    self.err("mapping", "Mappings.%s.%s" % (name, k),
                             "must be a mapping of keys to values")

    def check_conditions(self):
        for name, c in self.conditions.items():
            path = "Conditions." + name
            fn = intrinsic(c)
            if fn not in CONDITION_FUNCS and fn != "Condition":
                self.err("condition", path,
                         "must be Fn::And, Fn::Equals, Fn::Not, Fn::Or or "
                         "Condition")
            self.walk(c, path, "condition")

    def check_rules(self):
        for name, r in (self.t.get("Rules") or {}).items():
            path = "Rules." + name
            if not isinstance(r, dict) or "Assertions" not in r:
                self.err("rule", path, "needs Assertions")
                continue
            for k in r:
                if k not in ("RuleCondition", "Assertions"):
                    self.err("rule", "%s.%s" % (path, k), "unknown key")
            for i, a in enumerate(r.get("Assertions") or []):
                apath = "%s.Assertions[%d]" % (path, i)
                if not isinstance(a, dict) or "Assert" not in a:
                    self.err("rule", apath, "needs Assert")
                    continue
                self.walk(a["Assert"], apath + ".Assert", "rule")
            if "RuleCondition" in r:
                self.walk(r["RuleCondition"], path + ".RuleCondition", "rule")

    def check_resources(self):
        for name, r in self.resources.items():
            path = "Resources." + name
            if not isinstance(r, dict):
                self.err("resource", path, "must be a mapping")
                continue
            for k in r:
                if k not in RESOURCE_KEYS:
                    self.err("resource", "%s.%s" % (path, k),
                             "unknown resource attribute"
                             + suggest(k, RESOURCE_KEYS))
            rtype = r.get("Type")
            deps = r.get("DependsOn", [])
            for d in deps if isinstance(deps, list) else [deps]:
                if d not in self.resources:
                    self.err("ref", path + ".DependsOn",
                             "no resource %r" % (d,) + suggest(
                                 str(d), self.resources))
            if "Condition" in r and r["Condition"] not in self.conditions:
                self.err("ref", path + ".Condition",
                         "no condition %r" % (r["Condition"],))
            for pol in ("DeletionPolicy", "UpdateReplacePolicy"):
                if pol in r and r[pol] not in DELETION_POLICIES:
                    self.err("resource", "%s.%s" % (path, pol),
                             "not one of %s" % sorted(DELETION_POLICIES))
            self.check_policy_attr(path + ".CreationPolicy",
                                   r.get("CreationPolicy"), CREATION_POLICY)
            self.check_policy_attr(path + ".UpdatePolicy",
                                   r.get("UpdatePolicy"), UPDATE_POLICY)
            props = r.get("Properties", {})
            self.walk(props, path + ".Properties", "resource")
            for k in ("CreationPolicy", "UpdatePolicy", "Metadata"):
                if k in r:
                    self.walk(r[k], "%s.%s" % (path, k), "resource")
            if not isinstance(rtype, str):
                self.err("resource", path + ".Type", "missing")
                continue
            if rtype.startswith("Custom::") or \
                    rtype == "AWS::CloudFormation::CustomResource":
                continue
            rspec = self.spec.resources.get(rtype)
            if rspec is None:
                self.err("spec", path + ".Type",
                         "unknown resource type %s" % rtype
                         + suggest(rtype, self.spec.resources))
                continue
            if intrinsic(props) == "Fn::If":
                continue
            if not isinstance(props, dict):
                self.err("spec", path + ".Properties", "must be a mapping")
                continue
            self.check_props(props, rspec["properties"], rtype,
                             path + ".Properties")

    def check_policy_attr(self, path, value, allowed):
        if value is None:
            return
        if not isinstance(value, dict):
            self.err("resource", path, "must be a mapping")
            return
        for k, v in value.items():
            if k not in allowed:
                self.err("resource", "%s.%s" % (path, k), "unknown key"
                         + suggest(k, allowed))
                continue
            keys = allowed[k]
            if keys is None or not isinstance(v, dict):
                continue
            for kk, vv in v.items():
                if kk not in keys:
                    self.err("resource", "%s.%s.%s" % (path, k, kk),
                             "unknown key" + suggest(kk, keys))
                elif kk in ("Timeout", "PauseTime") and isinstance(vv, str) \
                        and not ISO_DURATION.match(vv):
                    self.err("resource", "%s.%s.%s" % (path, k, kk),
                             "%r is not an ISO 8601 duration (PT30M)" % vv)

    def check_outputs(self):
        for name, o in (self.t.get("Outputs") or {}).items():
            path = "Outputs." + name
            if not isinstance(o, dict) or "Value" not in o:
                self.err("output", path, "needs a Value")
                continue
            for k in o:
                if k not in ("Description", "Value", "Export", "Condition"):
                    self.err("output", "%s.%s" % (path, k), "unknown key")
            if "Condition" in o and o["Condition"] not in self.conditions:
                self.err("ref", path + ".Condition",
                         "no condition %r" % (o["Condition"],))
            v = o["Value"]
            if isinstance(v, (list, dict)) and not intrinsic(v):
                self.err("output", path + ".Value", "must be a string")
            elif intrinsic(v) and "list" in self.kinds(v):
                self.err("output", path + ".Value",
                         "a list; join it into a string (Fn::Join)")
            self.walk(o, path, "output")

    # ---- intrinsic functions ---------------------------------------------

    def walk(self, v, path, ctx):
        """Check every intrinsic function inside v."""
        fn = intrinsic(v)
        if fn is not None:
            self.check_fn(fn, v[fn], path, ctx)
            return
        if isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str) and k.startswith("Fn::"):
                    self.err("fn", "%s.%s" % (path, k),
                             "a function must be the only key of its "
                             "mapping")
                self.walk(x, "%s.%s" % (path, k), ctx)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                self.walk(x, "%s[%d]" % (path, i), ctx)

    def ref_target_ok(self, name, ctx):
        if name in self.params or name in PSEUDO:
            return True
        return name in self.resources and ctx not in ("condition", "rule")

    def check_fn(self, fn, arg, path, ctx):
        p = "%s.%s" % (path, fn)
        if fn in RULE_FUNCS and ctx != "rule":
            self.err("fn", p, "only valid in Rules")
        if fn in ("Fn::Length", "Fn::ToJsonString"):
            self.err("fn", p, "needs the AWS::LanguageExtensions transform")
        if fn == "Ref":
            if not isinstance(arg, str):
                self.err("fn", p, "takes a logical id or parameter name")
            elif not self.ref_target_ok(arg, ctx):
                where = ("parameter" if ctx in ("condition", "rule")
                         else "parameter, resource or pseudo parameter")
                self.err("ref", p, "no %s %r" % (where, arg) + suggest(
                    arg, list(self.params) + list(self.resources)))
            return
        if fn == "Condition":
            if ctx not in ("condition",) and not path.endswith(
                    ("Fn::And[0]", "Fn::Or[0]")) and "Fn::" not in path:
                pass
            if not isinstance(arg, str) or arg not in self.conditions:
                self.err("ref", p, "no condition %r" % (arg,))
            return
        if fn == "Fn::GetAtt":
            if not (isinstance(arg, list) and len(arg) == 2 and
                    isinstance(arg[0], str)):
                self.err("fn", p, "takes [Resource, Attribute]")
                return
            self.check_getatt(arg[0], arg[1], p)
            if intrinsic(arg[1]):
                self.walk(arg[1], p + "[1]", ctx)
            return
        if fn == "Fn::Sub":
            self.check_sub(arg, p, ctx)
            return
        if fn == "Fn::If":
            if ctx == "condition":
                self.err("fn", p, "not allowed in Conditions")
            if not (isinstance(arg, list) and len(arg) == 3 and
                    isinstance(arg[0], str)):
                self.err("fn", p, "takes [Condition, IfTrue, IfFalse]")
                return
            if arg[0] not in self.conditions:
                self.err("ref", p, "no condition %r" % arg[0] + suggest(
                    arg[0], self.conditions))
            self.walk(arg[1], p + "[1]", ctx)
            self.walk(arg[2], p + "[2]", ctx)
            return
        shapes = {
            "Fn::Base64": (1, None), "Fn::ImportValue": (1, None),
            "Fn::GetAZs": (1, None), "Fn::Join": (2, 2),
            "Fn::Select": (2, 2), "Fn::Split": (2, 2), "Fn::Cidr": (3, 3),
            "Fn::FindInMap": (3, 4), "Fn::Equals": (2, 2),
            "Fn::Not": (1, 1), "Fn::And": (2, 10), "Fn::Or": (2, 10),
        }
        if fn not in FUNCS:
            self.err("fn", p, "unknown function" + suggest(fn, FUNCS))
            return
        if fn in shapes:
            lo, hi = shapes[fn]
            if hi is None:
                if isinstance(arg, list) and fn != "Fn::GetAZs":
                    self.err("fn", p, "takes one value, not a list")
            elif not isinstance(arg, list) or not lo <= len(arg) <= hi:
                self.err("fn", p, "takes a list of %s" % (
                    lo if lo == hi else "%d to %d" % (lo, hi)))
                return
        if fn == "Fn::GetAZs" and not (
                arg == "" or isinstance(arg, str) or
                arg == {"Ref": "AWS::Region"}):
            self.err("fn", p, 'takes "" or a region')
        if fn == "Fn::Join":
            if not isinstance(arg[0], str):
                self.err("fn", p + "[0]", "the delimiter must be a string")
            self.expect_list(arg[1], p + "[1]")
        if fn == "Fn::Select":
            idx = arg[0]
            if not intrinsic(idx) and not re.fullmatch(r"\d+", str(idx)):
                self.err("fn", p + "[0]", "index must be a whole number")
            self.expect_list(arg[1], p + "[1]")
        if fn == "Fn::Split" and not isinstance(arg[0], str):
            self.err("fn", p + "[0]", "the delimiter must be a string")
        if fn == "Fn::FindInMap":
            m = arg[0]
            if isinstance(m, str):
                if m not in self.mappings:
                    self.err("ref", p, "no mapping %r" % m)
                elif isinstance(arg[1], str):
                    top = self.mappings[m]
                    if arg[1] not in top:
                        self.err("ref", p, "mapping %s has no key %r"
                                 % (m, arg[1]))
                    elif isinstance(arg[2], str) and \
                            arg[2] not in (top[arg[1]] or {}):
                        self.err("ref", p, "mapping %s.%s has no key %r"
                                 % (m, arg[1], arg[2]))
        if fn in ("Fn::And", "Fn::Or", "Fn::Not"):
            for i, c in enumerate(arg):
                f = intrinsic(c)
                if f not in CONDITION_FUNCS | {"Condition"} | RULE_FUNCS:
                    self.err("fn", "%s[%d]" % (p, i),
                             "must be a condition function or Condition")
        self.walk(arg, p, ctx)

    def expect_list(self, v, path):
        if isinstance(v, list):
            return
        if intrinsic(v):
            if "scalar" in self.kinds(v) and "list" not in self.kinds(v) \
                    and "any" not in self.kinds(v):
                self.err("fn", path, "a list is needed here")
            return
        self.err("fn", path, "a list is needed here")

    def check_getatt(self, res, attr, path):
        r = self.resources.get(res)
        if r is None:
            self.err("ref", path, "no resource %r" % res
                     + suggest(res, self.resources))
            return None
        if not isinstance(attr, str):
            return None
        rtype = r.get("Type", "")
        if rtype.startswith("Custom::") or \
                rtype == "AWS::CloudFormation::CustomResource":
            return None
        rspec = self.spec.resources.get(rtype)
        if rspec is None:
            return None
        if rtype == "AWS::CloudFormation::Stack" and \
                attr.startswith("Outputs."):
            return {"type": "string"}
        a = rspec["attributes"].get(attr)
        if a is None:
            self.err("ref", path, "%s has no attribute %r" % (rtype, attr)
                     + suggest(attr, rspec["attributes"]))
            return None
        return a["type"]

    def check_sub(self, arg, path, ctx):
        if isinstance(arg, str):
            tmpl, local = arg, {}
        elif isinstance(arg, list) and len(arg) == 2 and \
                isinstance(arg[0], str) and isinstance(arg[1], dict):
            tmpl, local = arg
            for k, v in local.items():
                self.walk(v, "%s[1].%s" % (path, k), ctx)
        else:
            self.err("fn", path, "takes a string or [string, {vars}]")
            return
        for m in re.finditer(r"\$\{([^}]*)\}", tmpl):
            name = m.group(1).strip()
            if name.startswith("!"):
                continue
            if name in local or self.ref_target_ok(name, ctx):
                continue
            if "." in name:
                res, attr = name.split(".", 1)
                if res in self.resources:
                    self.check_getatt(res, attr, path)
                    continue
            self.err("ref", path, "${%s}: no parameter, resource, attribute "
                     "or variable of that name (write ${!%s} for a literal "
                     "${%s})" % (name, name, name))

    def kinds(self, v):
        """What an intrinsic evaluates to: a set of scalar, list, object,
        novalue, any."""
        fn = intrinsic(v)
        if fn is None:
            if isinstance(v, list):
                return {"list"}
            if isinstance(v, dict):
                return {"object"}
            return {"scalar"}
        arg = v[fn]
        if fn == "Ref":
            if arg in PSEUDO:
                return {PSEUDO[arg]}
            p = self.params.get(arg)
            if isinstance(p, dict):
                t = str(p.get("Type", ""))
                if t.startswith("List<") or t == "CommaDelimitedList" or \
                        re.match(r"AWS::SSM::Parameter::Value<List<", t):
                    return {"list"}
            return {"scalar"}
        if fn == "Fn::GetAtt":
            if isinstance(arg, list) and len(arg) == 2:
                r = self.resources.get(arg[0]) or {}
                rspec = self.spec.resources.get(r.get("Type"))
                if rspec and isinstance(arg[1], str):
                    a = rspec["attributes"].get(arg[1])
                    if a:
                        t = a["type"]["type"]
                        return {"list" if t == "array" else
                                "object" if t in ("ref", "map", "json")
                                else "scalar"}
            return {"any"}
        if fn in ("Fn::GetAZs", "Fn::Split", "Fn::Cidr"):
            return {"list"}
        if fn == "Fn::If":
            if isinstance(arg, list) and len(arg) == 3:
                return self.kinds(arg[1]) | self.kinds(arg[2])
            return {"any"}
        if fn in ("Fn::FindInMap", "Fn::Transform", "Fn::Select"):
            return {"any"}
        return {"scalar"}

    # ---- properties against the specification ----------------------------

    def check_props(self, obj, props, tname, path):
        for k, v in obj.items():
            if k not in props:
                self.err("spec", "%s.%s" % (path, k),
                         "%s has no property %s" % (tname, k)
                         + suggest(k, props))
                continue
            if is_novalue(v):
                continue
            self.check_value(v, props[k]["type"], "%s.%s" % (path, k))
        for k, p in props.items():
            if p.get("required") and k not in obj:
                self.err("spec", path, "%s needs property %s" % (tname, k))

    def check_value(self, v, typ, path):
        for rule, p, msg in self.type_errors(v, typ, path):
            self.err(rule, p, msg)

    def type_errors(self, v, typ, path):
        """Errors of value v against spec type typ: [(rule, path, msg)]."""
        t = typ["type"]
        fn = intrinsic(v)
        if fn == "Fn::If":
            arg = v[fn]
            out = []
            if isinstance(arg, list) and len(arg) == 3:
                for i in (1, 2):
                    if not is_novalue(arg[i]):
                        out += self.type_errors(arg[i], typ,
                                                "%s.Fn::If[%d]" % (path, i))
            return out
        if fn is not None:
            k = self.kinds(v)
            if "any" in k:
                return []
            if t == "array" and "list" not in k:
                return [("spec", path, "a list is needed, %s gives a single "
                         "value" % fn)]
            if t in SCALAR_TYPES and k == {"list"}:
                return [("spec", path, "a single value is needed, %s gives "
                         "a list" % fn)]
            if t in ("ref", "tag") and "object" not in k:
                return [("spec", path, "an object is needed, %s gives a "
                         "%s" % (fn, "list" if "list" in k else "string"))]
            return []
        if t == "union":
            best = None
            for alt in typ["types"]:
                errs = self.type_errors(v, alt, path)
                if not errs:
                    return []
                if best is None or len(errs) < len(best):
                    best = errs
            return best or []
        if t == "json":
            return []
        if t == "string" or t == "date-time":
            if not is_scalar(v):
                return [("spec", path, "a string is needed, not a %s"
                         % type(v).__name__)]
            allowed = typ.get("allowedValues")
            if allowed and isinstance(v, str) and v not in allowed:
                return [("spec", path, "%r is not one of %s"
                         % (v, ", ".join(allowed)))]
            return []
        if t == "integer":
            if isinstance(v, bool) or not (
                    isinstance(v, int) or
                    (isinstance(v, str) and re.fullmatch(r"-?\d+", v))):
                return [("spec", path, "an integer is needed, not %r" % (v,))]
            return []
        if t == "number":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            if isinstance(v, str):
                try:
                    float(v)
                    ok = True
                except ValueError:
                    pass
            return [] if ok else [("spec", path, "a number is needed, not "
                                   "%r" % (v,))]
        if t == "boolean":
            if isinstance(v, bool) or (isinstance(v, str) and
                                       v.lower() in ("true", "false")):
                return []
            return [("spec", path, "true or false is needed, not %r" % (v,))]
        if t == "array":
            if not isinstance(v, list):
                return [("spec", path, "a list is needed, not a %s"
                         % type(v).__name__)]
            out = []
            for i, x in enumerate(v):
                if not is_novalue(x):
                    out += self.type_errors(x, typ["element"],
                                            "%s[%d]" % (path, i))
            return out
        if t == "map":
            if not isinstance(v, dict):
                return [("spec", path, "a mapping is needed")]
            out = []
            for k, x in v.items():
                out += self.type_errors(x, typ["element"],
                                        "%s.%s" % (path, k))
            return out
        if t == "tag":
            if not isinstance(v, dict):
                return [("spec", path, "a tag {Key, Value} is needed")]
            out = [("spec", "%s.%s" % (path, k), "a tag has only Key and "
                    "Value") for k in v if k not in ("Key", "Value")]
            out += [("spec", path, "a tag needs %s" % k)
                    for k in ("Key", "Value") if k not in v]
            for k in ("Key", "Value"):
                if k in v:
                    out += self.type_errors(v[k], {"type": "string"},
                                            "%s.%s" % (path, k))
            return out
        if t == "ref":
            td = self.spec.typedef(typ["reference"])
            if not isinstance(v, dict):
                return [("spec", path, "a %s object is needed, not a %s"
                         % (td["name"], type(v).__name__))]
            out = []
            props = td["properties"]
            for k, x in v.items():
                if k not in props:
                    out.append(("spec", "%s.%s" % (path, k),
                                "%s has no property %s" % (td["name"], k)
                                + suggest(k, props)))
                elif not is_novalue(x):
                    out += self.type_errors(x, props[k]["type"],
                                            "%s.%s" % (path, k))
            for k, pr in props.items():
                if pr.get("required") and k not in v:
                    out.append(("spec", path, "%s needs property %s"
                                % (td["name"], k)))
            return out
        return []

    # ---- sensornet policy ------------------------------------------------

    def param_default(self, v):
        """A literal, or the default of the parameter v refers to."""
        if intrinsic(v) == "Ref" and isinstance(v["Ref"], str):
            p = self.params.get(v["Ref"])
            if isinstance(p, dict):
                return p.get("Default")
        return v

    def ingress_rules(self):
        """(path, rule dict) of every ingress rule, inline or standalone."""
        for name, r in self.resources.items():
            if not isinstance(r, dict):
                continue
            props = r.get("Properties") or {}
            if r.get("Type") == "AWS::EC2::SecurityGroupIngress":
                yield "Resources.%s.Properties" % name, props
            elif r.get("Type") == "AWS::EC2::SecurityGroup":
                rules = props.get("SecurityGroupIngress") or []
                for path, rule in self.branches(
                        rules, "Resources.%s.Properties.SecurityGroupIngress"
                        % name):
                    if isinstance(rule, list):
                        for i, x in enumerate(rule):
                            for p2, x2 in self.branches(x, "%s[%d]"
                                                        % (path, i)):
                                yield p2, x2
                    else:
                        yield path, rule

    def branches(self, v, path):
        """Each value v can take: both sides of Fn::If, NoValue dropped."""
        if intrinsic(v) == "Fn::If" and isinstance(v["Fn::If"], list) and \
                len(v["Fn::If"]) == 3:
            for i in (1, 2):
                for x in self.branches(v["Fn::If"][i],
                                       "%s.Fn::If[%d]" % (path, i)):
                    yield x
        elif not is_novalue(v):
            yield path, v

    def check_policy(self):
        for m in AMI_ID.finditer(self.text):
            line = self.text.count("\n", 0, m.start()) + 1
            self.err("policy-ami", "line %d" % line,
                     "literal AMI id %s: use the SSM parameter "
                     "(AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>)"
                     % m.group(0))
        size = len(self.text.encode("utf-8"))
        if size > TEMPLATE_BODY_MAX:
            self.err("policy-size", self.name, "%d bytes: over the %d that "
                     "--template-body accepts" % (size, TEMPLATE_BODY_MAX))
        for path, rule in self.ingress_rules():
            if not isinstance(rule, dict):
                continue
            cidr = None
            for k in ("CidrIp", "CidrIpv6"):
                if k in rule:
                    cidr = self.param_default(rule[k])
            if cidr not in WORLD:
                continue
            proto = str(rule.get("IpProtocol"))
            if proto in ("-1", "all"):
                self.err("policy-open", path, "every port open to %s" % cidr)
                continue
            try:
                lo = int(rule.get("FromPort"))
                hi = int(rule.get("ToPort"))
            except (TypeError, ValueError):
                continue
            for port, what in sorted(PROTECTED_PORTS.items()):
                if lo <= port <= hi:
                    self.err("policy-open", path, "%s port %d open to %s"
                             % (what, port, cidr))
        for name, r in self.resources.items():
            if not isinstance(r, dict):
                continue
            path = "Resources." + name
            rtype = r.get("Type")
            for pol in ("DeletionPolicy", "UpdateReplacePolicy"):
                v = r.get(pol)
                if v in ("Retain", "RetainExceptOnCreate", "Snapshot"):
                    self.err("policy-retain", "%s.%s" % (path, pol),
                             "%s: delete-stack would leave it behind" % v)
                elif v is None and rtype in SNAPSHOT_BY_DEFAULT:
                    self.err("policy-retain", path,
                             "%s defaults to %s: Snapshot; say Delete"
                             % (rtype, pol))
            props = r.get("Properties") or {}
            if not isinstance(props, dict):
                continue
            md = None
            if rtype == "AWS::EC2::Instance":
                md = props.get("MetadataOptions")
                if md is None and "LaunchTemplate" in props:
                    md = {"HttpTokens": "required"}  # checked on the LT
            elif rtype == "AWS::EC2::LaunchTemplate":
                md = (props.get("LaunchTemplateData") or {}).get(
                    "MetadataOptions")
            if rtype in ("AWS::EC2::Instance", "AWS::EC2::LaunchTemplate"):
                if not isinstance(md, dict) or \
                        md.get("HttpTokens") != "required":
                    self.err("policy-imdsv2", path,
                             "MetadataOptions.HttpTokens must be required "
                             "(IMDSv2)")
            self.find_passwords(props, path + ".Properties")
            if rtype == "AWS::RDS::DBInstance" and \
                    props.get("ManageMasterUserPassword") not in (True,
                                                                  "true") \
                    and "MasterUserPassword" in props:
                self.err("policy-secret", path, "let Secrets Manager keep "
                         "the password (ManageMasterUserPassword: true)")

    def find_passwords(self, v, path):
        if isinstance(v, dict) and not intrinsic(v):
            for k, x in v.items():
                if "password" in str(k).lower() and isinstance(x, str) \
                        and not x.startswith("{{resolve:"):
                    self.err("policy-secret", "%s.%s" % (path, k),
                             "literal password in the template")
                self.find_passwords(x, "%s.%s" % (path, k))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                self.find_passwords(x, "%s[%d]" % (path, i))

    # ---- UserData --------------------------------------------------------

    def placeholder(self, name):
        fixed = {"AWS::Region": "us-east-1", "AWS::StackName": "stack",
                 "AWS::AccountId": "123456789012",
                 "AWS::Partition": "aws", "AWS::URLSuffix": "urlsuffix.test",
                 "AWS::StackId": "stack-id", "AWS::NoValue": ""}
        if name in fixed:
            return fixed[name]
        p = self.params.get(name)
        if isinstance(p, dict) and "Default" in p:
            return str(p["Default"])
        return re.sub(r"\W", "_", "X_" + name)

    def render(self, v, local=None):
        """The text a UserData value becomes: Fn::Sub with parameter
        defaults, placeholders for resources and attributes, the true side
        of Fn::If."""
        local = local or {}
        fn = intrinsic(v)
        if fn is None:
            if isinstance(v, bool):
                return "true" if v else "false"
            if is_scalar(v):
                return str(v)
            return "X_VALUE"
        arg = v[fn]
        if fn == "Fn::Base64":
            return self.render(arg, local)
        if fn == "Ref":
            return self.placeholder(arg)
        if fn == "Fn::GetAtt" and isinstance(arg, list):
            return re.sub(r"\W", "_", "X_%s_%s" % (arg[0], arg[1]))
        if fn == "Fn::If" and isinstance(arg, list) and len(arg) == 3:
            return self.render(arg[1], local)
        if fn == "Fn::Join" and isinstance(arg, list) and len(arg) == 2 \
                and isinstance(arg[1], list):
            return str(arg[0]).join(self.render(x, local) for x in arg[1])
        if fn == "Fn::Sub":
            if isinstance(arg, list) and len(arg) == 2:
                tmpl, loc = arg
                local = {k: self.render(x) for k, x in (loc or {}).items()}
            else:
                tmpl = arg

            def sub(m):
                name = m.group(1).strip()
                if name.startswith("!"):
                    return "${" + name[1:] + "}"
                if name in local:
                    return local[name]
                if "." in name and name.split(".", 1)[0] in self.resources:
                    return re.sub(r"\W", "_", "X_" + name)
                return self.placeholder(name)
            return re.sub(r"\$\{([^}]*)\}", sub, str(tmpl))
        return "X_" + fn.replace("Fn::", "")

    def userdata_sources(self):
        """(logical id, path, UserData value) of every UserData."""
        for name, r in self.resources.items():
            if not isinstance(r, dict):
                continue
            props = r.get("Properties") or {}
            if not isinstance(props, dict):
                continue
            rtype = r.get("Type")
            if rtype in ("AWS::EC2::Instance",
                         "AWS::AutoScaling::LaunchConfiguration") and \
                    "UserData" in props:
                yield name, "Resources.%s.Properties.UserData" % name, \
                    props["UserData"]
            if rtype == "AWS::EC2::LaunchTemplate":
                ltd = props.get("LaunchTemplateData") or {}
                if isinstance(ltd, dict) and "UserData" in ltd:
                    yield name, ("Resources.%s.Properties.LaunchTemplateData"
                                 ".UserData" % name), ltd["UserData"]

    def check_userdata(self):
        tmp = self.keep_userdata or tempfile.mkdtemp(prefix="cfn-userdata-")
        os.makedirs(tmp, exist_ok=True)
        base = re.sub(r"\W", "_", os.path.basename(self.name))
        try:
            for name, path, v in self.userdata_sources():
                if intrinsic(v) != "Fn::Base64":
                    self.err("userdata", path, "UserData must be Fn::Base64")
                script = self.render(v)
                self.userdata[name] = script
                if len(script.encode("utf-8")) > USERDATA_MAX:
                    self.err("userdata", path, "over %d bytes"
                             % USERDATA_MAX)
                if not script.startswith("#!"):
                    self.err("userdata", path, "must start with #! (cloud-"
                             "init runs only scripts)")
                    continue
                f = os.path.join(tmp, "%s.%s.sh" % (base, name))
                with open(f, "w") as fh:
                    fh.write(script)
                if "bash" in script.splitlines()[0]:
                    r = subprocess.run(["bash", "-n", f],
                                       capture_output=True, text=True)
                    if r.returncode != 0 or r.stderr.strip():
                        self.err("userdata-bash", path,
                                 (r.stderr or "bash -n failed").strip())
                if self.shellcheck:
                    r = subprocess.run(
                        ["shellcheck", "--severity=warning", "--format=gcc",
                         f], capture_output=True, text=True)
                    if r.returncode != 0:
                        out = (r.stdout + r.stderr).strip()
                        self.err("userdata-shellcheck", path,
                                 out.replace(f, name))
            self.check_signals()
        finally:
            if not self.keep_userdata:
                shutil.rmtree(tmp, ignore_errors=True)

    def check_signals(self):
        """A CreationPolicy ResourceSignal waits for a signal: the UserData
        that runs on that resource's instances must send it, naming it."""
        lt_of = {}
        for name, r in self.resources.items():
            props = (r or {}).get("Properties") or {}
            lt = props.get("LaunchTemplate") if isinstance(props, dict) \
                else None
            if isinstance(lt, dict):
                ref = lt.get("LaunchTemplateId") or lt.get(
                    "LaunchTemplateName")
                if intrinsic(ref) == "Ref":
                    lt_of[name] = ref["Ref"]
        for name, r in self.resources.items():
            cp = (r or {}).get("CreationPolicy") or {}
            if not isinstance(cp, dict) or "ResourceSignal" not in cp:
                continue
            script = self.userdata.get(name) or self.userdata.get(
                lt_of.get(name, ""))
            path = "Resources.%s.CreationPolicy" % name
            if script is None:
                self.err("policy-signal", path, "waits for a signal but "
                         "no UserData runs on its instances")
            elif "signal" not in script or \
                    not re.search(r"\b%s\b" % re.escape(name), script):
                self.err("policy-signal", path, "its UserData never "
                         "signals %s" % name)


def check_file(path, spec, shellcheck=True, keep_userdata=None):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    c = Checker(spec, text, name=path, shellcheck=shellcheck,
                keep_userdata=keep_userdata)
    c.run()
    return c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("templates", nargs="+")
    ap.add_argument("--spec", help="db.json.gz (default: %s)" % SPEC_PATH)
    ap.add_argument("--no-shellcheck", action="store_true")
    ap.add_argument("--keep-userdata", metavar="DIR",
                    help="write the rendered UserData scripts there")
    a = ap.parse_args(argv)
    spec = Spec(a.spec)
    bad = 0
    for t in a.templates:
        c = check_file(t, spec, not a.no_shellcheck, a.keep_userdata)
        for f in c.findings:
            print("%s: %s" % (t, f))
        bad += len(c.findings)
        if not c.findings:
            print("%s: ok (%d resources)" % (t, len(c.resources)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
