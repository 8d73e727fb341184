"""Deployment, checked offline: deploy/aws/*.yaml, deploy/bootstrap.sh,
deploy/systemd/*, make dist (deploy/dist.mk).

No AWS account is reachable, so the templates are checked the way
CloudFormation would read them: yamllint, then tests/deploy/cfn_check.py
against the current resource specification (npm's @aws-cdk/aws-service-spec,
installed into build/npm by tests/deploy/fetch-spec.sh), with every UserData
through shellcheck. The checker is shown to fail where it should: on a
template with the original project's defects and on one defect at a time.
The units go through systemd-analyze verify; bootstrap.sh runs for real
(no systemd here: its background mode) with a fake AWS CLI for the
CloudFormation signal and the database secret.
tests/integ/test_deploy_testbed.py runs it on the multi-host testbed.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from conftest import BUILD, ROOT, get_port, skip_or_fail, wait_until
from pg import pg  # noqa: F401 (the fixture)

sys.path.insert(0, os.path.join(ROOT, "tests", "deploy"))
import cfn_check  # noqa: E402
from deploylib import (BOOTSTRAP, FAKE_AWS, Host, fake_aws_env,  # noqa: E402
                       fake_key, make_dist, pid_alive, remove, sensor_token,
                       shared_tmp, tls_support)

AWS_DIR = os.path.join(ROOT, "deploy", "aws")
TEMPLATES = ["infraestrutura.yaml", "scale.yaml"]
UNITS = os.path.join(ROOT, "deploy", "systemd")


def need(tool, package):
    if shutil.which(tool) is None:
        skip_or_fail("%s not installed (Debian: apt-get install %s)"
                     % (tool, package))


def template_text(name):
    with open(os.path.join(AWS_DIR, name), encoding="utf-8") as f:
        return f.read()


def load(name):
    return cfn_check.load_template(template_text(name))


@pytest.fixture(scope="module")
def spec():
    """The CloudFormation resource specification (installed once)."""
    need("npm", "npm")
    r = subprocess.run(["bash", os.path.join(ROOT, "tests", "deploy",
                                             "fetch-spec.sh")],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        skip_or_fail("could not install @aws-cdk/aws-service-spec: %s"
                     % r.stderr.strip())
    return cfn_check.Spec(r.stdout.strip())


def check_text(spec, text, shellcheck=True):
    c = cfn_check.Checker(spec, text, name="t.yaml", shellcheck=shellcheck)
    c.run()
    return c


# ---- the templates --------------------------------------------------------

def test_yamllint():
    need("yamllint", "yamllint")
    r = subprocess.run(
        ["yamllint", "-s", "-c", os.path.join(AWS_DIR, ".yamllint.yaml")]
        + [os.path.join(AWS_DIR, t) for t in TEMPLATES],
        capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_passes_cfn_check(spec, name):
    need("shellcheck", "shellcheck")
    c = cfn_check.check_file(os.path.join(AWS_DIR, name), spec)
    assert [str(f) for f in c.findings] == []
    # Every UserData was rendered and checked.
    assert c.userdata, "no UserData found"


def test_cfn_check_command_line(spec):
    """The checker's own command line: exit 0 on the templates, 1 on the
    broken one."""
    env = dict(os.environ, SENSORNET_CFN_SPEC=spec.path)
    tool = os.path.join(ROOT, "tests", "deploy", "cfn_check.py")
    ok = subprocess.run([sys.executable, tool] + [
        os.path.join(AWS_DIR, t) for t in TEMPLATES],
        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([sys.executable, tool, os.path.join(
        ROOT, "tests", "deploy", "broken", "original.yaml")],
        capture_output=True, text=True, env=env)
    assert bad.returncode == 1, bad.stdout + bad.stderr


def test_checker_catches_the_original_defects(spec):
    """tests/deploy/broken/original.yaml has the original's defects: an
    unclosed heredoc in UserData, a literal AMI id, the sensor port open to
    0.0.0.0/0 and an unknown property. Each must be reported."""
    need("shellcheck", "shellcheck")
    c = cfn_check.check_file(os.path.join(
        ROOT, "tests", "deploy", "broken", "original.yaml"), spec)
    rules = {f.rule for f in c.findings}
    text = "\n".join(str(f) for f in c.findings)
    assert "userdata-shellcheck" in rules, text
    assert "here document" in text.lower() or "SC1039" in text, text
    assert "policy-ami" in rules, text
    assert re.search(r"policy-open: .*sensor port 5000 open to 0\.0\.0\.0/0",
                     text), text
    assert re.search(r"spec: .*has no property MapPublicIP", text), text


def test_bash_n_alone_misses_an_unclosed_heredoc(tmp_path):
    """Why UserData goes through shellcheck: bash -n only warns."""
    need("shellcheck", "shellcheck")
    f = tmp_path / "ud.sh"
    f.write_text("#!/bin/bash\ncat >/tmp/x <<EOF\nhello\n  EOF\necho done\n")
    assert subprocess.run(["bash", "-n", str(f)],
                          capture_output=True).returncode == 0
    assert subprocess.run(["shellcheck", str(f)],
                          capture_output=True).returncode != 0


GOOD = r"""
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  ImageId:
    Type: AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>
    Default: /aws/service/debian/release/12/latest/amd64
  SensorCidr:
    Type: String
    Default: 10.0.0.0/16
    AllowedPattern: "^(\\d{1,3}\\.){3}\\d{1,3}/\\d{1,2}$"
Conditions:
  Always: !Equals [a, a]
Resources:
  VPC:
    Type: AWS::EC2::VPC
    Properties:
      CidrBlock: 10.0.0.0/16
  Group:
    Type: AWS::EC2::SecurityGroup
    Properties:
      GroupDescription: sensors
      VpcId: !Ref VPC
      SecurityGroupIngress:
        - {IpProtocol: tcp, FromPort: 5000, ToPort: 5000,
           CidrIp: !Ref SensorCidr}
  Server:
    Type: AWS::EC2::Instance
    CreationPolicy:
      ResourceSignal: {Count: 1, Timeout: PT30M}
    Properties:
      ImageId: !Ref ImageId
      InstanceType: t3.micro
      SecurityGroupIds: [!GetAtt Group.GroupId]
      MetadataOptions: {HttpTokens: required}
      UserData:
        Fn::Base64: !Sub |
          #!/bin/bash
          set -eu
          cat >/etc/motd <<EOF
          sensornet in ${AWS::Region}
          EOF
          aws cloudformation signal-resource --stack-name '${AWS::StackName}' \
            --logical-resource-id Server --unique-id "$(hostname)" \
            --status SUCCESS
Outputs:
  Ip:
    Value: !GetAtt Server.PrivateIp
"""

# (name, text replaced, replacement, rule expected)
DEFECTS = [
    ("unclosed-heredoc", "          EOF\n", "            EOF\n",
     "userdata-shellcheck"),
    ("literal-ami", "ImageId: !Ref ImageId", "ImageId: ami-0123456789abcdef0",
     "policy-ami"),
    ("world-sensor-port", "CidrIp: !Ref SensorCidr", "CidrIp: 0.0.0.0/0",
     "policy-open"),
    ("world-default-param", "Default: 10.0.0.0/16", "Default: 0.0.0.0/0",
     "policy-open"),
    ("all-ports-open", "{IpProtocol: tcp, FromPort: 5000, ToPort: 5000,",
     "{IpProtocol: '-1', CidrIp: 0.0.0.0/0}\n        - {IpProtocol: tcp, "
     "FromPort: 5000, ToPort: 5000,", "policy-open"),
    ("unknown-property", "CidrBlock: 10.0.0.0/16\n",
     "CidrBlock: 10.0.0.0/16\n      EnableDnsHostname: true\n", "spec"),
    ("wrong-type", "FromPort: 5000", "FromPort: five", "spec"),
    ("scalar-for-list", "SecurityGroupIds: [!GetAtt Group.GroupId]",
     "SecurityGroupIds: !GetAtt Group.GroupId", "spec"),
    ("bad-enum", "HttpTokens: required", "HttpTokens: sometimes", "spec"),
    ("missing-required", "      GroupDescription: sensors\n", "", "spec"),
    ("unknown-type", "Type: AWS::EC2::VPC", "Type: AWS::EC2::Vpcs", "spec"),
    ("bad-ref", "VpcId: !Ref VPC", "VpcId: !Ref Vpc", "ref"),
    ("bad-getatt", "!GetAtt Server.PrivateIp", "!GetAtt Server.PrivateIP",
     "ref"),
    ("bad-sub", "${AWS::Region}", "${Region}", "ref"),
    ("bad-condition", "Conditions:\n  Always: !Equals [a, a]",
     "Conditions:\n  Always: !Not [!Condition Never]", "ref"),
    ("bad-dependson", "    CreationPolicy:",
     "    DependsOn: Gateway\n    CreationPolicy:", "ref"),
    ("duplicate-key", "      InstanceType: t3.micro\n",
     "      InstanceType: t3.micro\n      InstanceType: t3.small\n", "yaml"),
    ("imdsv1", "HttpTokens: required", "HttpTokens: optional",
     "policy-imdsv2"),
    ("retain", "  VPC:\n    Type: AWS::EC2::VPC\n",
     "  VPC:\n    Type: AWS::EC2::VPC\n    DeletionPolicy: Retain\n",
     "policy-retain"),
    ("rds-default-snapshot", "Outputs:",
     "  Db:\n    Type: AWS::RDS::DBInstance\n    Properties:\n"
     "      DBInstanceClass: db.t4g.micro\n      Engine: postgres\n"
     "      AllocatedStorage: '20'\n      MasterUsername: sensornet\n"
     "      ManageMasterUserPassword: true\nOutputs:", "policy-retain"),
    ("literal-password", "Outputs:",
     "  Db:\n    Type: AWS::RDS::DBInstance\n    DeletionPolicy: Delete\n"
     "    UpdateReplacePolicy: Delete\n    Properties:\n"
     "      DBInstanceClass: db.t4g.micro\n      Engine: postgres\n"
     "      MasterUsername: sensornet\n      MasterUserPassword: hunter22\n"
     "Outputs:", "policy-secret"),
    ("unsignalled", "--logical-resource-id Server", "--logical-resource-id X",
     "policy-signal"),
    ("default-vs-pattern", "Default: 10.0.0.0/16", "Default: everywhere",
     "parameter"),
    ("bad-duration", "Timeout: PT30M", "Timeout: 30m", "resource"),
    ("list-output", "Value: !GetAtt Server.PrivateIp", "Value: !GetAZs ''",
     "output"),
    ("userdata-no-shebang", "          #!/bin/bash\n", "", "userdata"),
]


def test_checker_passes_the_good_template(spec):
    need("shellcheck", "shellcheck")
    c = check_text(spec, GOOD)
    assert [str(f) for f in c.findings] == []


@pytest.mark.parametrize("name,old,new,rule", DEFECTS,
                         ids=[d[0] for d in DEFECTS])
def test_checker_catches_each_defect(spec, name, old, new, rule):
    need("shellcheck", "shellcheck")
    assert old in GOOD, name
    c = check_text(spec, GOOD.replace(old, new, 1))
    assert rule in {f.rule for f in c.findings}, \
        "%s: want %s, got %s" % (name, rule, [str(f) for f in c.findings])


# ---- what the templates must say -------------------------------------------

def userdata(spec, name):
    c = cfn_check.Checker(spec, template_text(name), name=name,
                          shellcheck=False)
    c.run()
    return c.userdata


def strip_instance_lines(script):
    """A stage 0 without its `me=` line and its `args=( ... )` array."""
    script = re.sub(r"(?ms)^args=\(.*?\)$", "args=(...)", script)
    return re.sub(r"(?m)^me=\w+$", "me=...", script)


def test_every_stage0_is_the_same(spec):
    """The UserData scripts differ only in `me=` and `args=(...)`."""
    scripts = {}
    for t in TEMPLATES:
        for name, s in userdata(spec, t).items():
            scripts["%s:%s" % (t, name)] = strip_instance_lines(s)
    assert len(scripts) == 5, sorted(scripts)
    first = next(iter(scripts.values()))
    for k, s in scripts.items():
        assert s == first, "%s differs from the others" % k


def bootstrap_options():
    with open(BOOTSTRAP) as f:
        text = f.read()
    return set(re.findall(r"^\s+(--[a-z-]+)\)", text, re.M))


def test_stage0_passes_only_options_bootstrap_knows(spec):
    known = bootstrap_options()
    assert {"--role", "--server", "--kind", "--sensors", "--pg-secret",
            "--cfn-signal", "--no-systemd", "--artifact"} <= known
    for t in TEMPLATES:
        for name, s in userdata(spec, t).items():
            m = re.search(r"(?ms)^args=\((.*?)\)$", s)
            tail = s[s.index('exec bash "$src/deploy/bootstrap.sh"'):]
            used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", m.group(1)))
            used |= set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", tail))
            assert used <= known, "%s %s: %s" % (t, name, used - known)
            assert '--cfn-signal "$stack:$me"' in tail
            me = re.search(r"(?m)^me=(\w+)$", s).group(1)
            res = load(t)["Resources"]
            assert "ResourceSignal" in res[me]["CreationPolicy"], (t, me)


def test_original_command_line(spec):
    """create-stack with only KeyName (and CAPABILITY_NAMED_IAM): KeyName
    is a parameter that may be empty, every other parameter has a default
    but the source, whose absence a Rule reports at once."""
    t = load("infraestrutura.yaml")
    params = t["Parameters"]
    assert params["KeyName"]["Type"] == "String"
    assert params["KeyName"]["Default"] == ""
    missing = [p for p, v in params.items() if "Default" not in v]
    assert missing == []
    assert "SourceGiven" in t["Rules"]
    assert t["Conditions"]["HasKeyName"]
    # IAM resources without explicit names: CAPABILITY_IAM is enough, and
    # the original's CAPABILITY_NAMED_IAM covers it.
    for r in t["Resources"].values():
        if r["Type"].startswith("AWS::IAM::"):
            assert "RoleName" not in r["Properties"]
            assert "InstanceProfileName" not in r["Properties"]


def ingress(t, group):
    return t["Resources"][group]["Properties"].get("SecurityGroupIngress")


def test_original_topology(spec):
    t = load("infraestrutura.yaml")
    res = t["Resources"]
    p = t["Parameters"]
    assert res["VPC"]["Properties"]["CidrBlock"] == "10.0.0.0/16"
    assert res["ServerSubnet"]["Properties"]["CidrBlock"] == "10.0.1.0/24"
    assert res["ClientSubnet"]["Properties"]["CidrBlock"] == "10.0.2.0/24"
    ips = {n: res[n]["Properties"]["PrivateIpAddress"]
           for n in ("EC2Server", "EC2Client1", "EC2Client2")}
    assert ips == {"EC2Server": "10.0.1.10", "EC2Client1": "10.0.2.11",
                   "EC2Client2": "10.0.2.12"}
    ud = userdata(spec, "infraestrutura.yaml")
    assert "--role server" in ud["EC2Server"]
    assert "--server 10.0.1.10:5000 --kind temperature" in ud["EC2Client1"]
    assert "--server 10.0.1.10:5000 --kind humidity" in ud["EC2Client2"]
    # TLS and tokens on by default (issue #8): the server makes the CA and
    # publishes it, the sensors wait for it; everyone reads the master
    # secret, the server lists both sensors.
    assert p["EnableTls"]["Default"] == "true"
    assert p["EnableTokens"]["Default"] == "true"
    srv = ud["EC2Server"]
    assert "--tls 'auto'" in srv
    assert "--tls-publish-ssm 'X_CaCertParameter'" in srv
    assert "--token-secret 'X_TokenSecret'" in srv
    assert "--token-sensor Sensor1 --token-sensor Sensor2" in srv
    for n in ("EC2Client1", "EC2Client2"):
        assert "--tls 'auto' --tls-ca-ssm 'X_CaCertParameter'" in ud[n]
        assert "--token-secret 'X_TokenSecret'" in ud[n]
    sec = res["TokenSecret"]
    assert sec["Type"] == "AWS::SecretsManager::Secret"
    assert sec["Condition"] == "TokensOn"
    assert sec["Properties"]["GenerateSecretString"]["PasswordLength"] >= 32
    par = res["CaCertParameter"]
    assert par["Type"] == "AWS::SSM::Parameter"
    assert par["Condition"] == "TlsOn"
    assert par["Properties"]["Value"] == "pending"
    rules = ingress(t, "ServerSecurityGroup")
    ports = {r["FromPort"]: r["CidrIp"] for r in rules if "FromPort" in r}
    assert ports[5000] == {"Ref": "SensorCidr"}
    assert ports[8080] == {"Ref": "DashboardCidr"}
    assert p["SensorCidr"]["Default"] == "10.0.0.0/16"
    assert p["DashboardCidr"]["Default"] == "10.0.0.0/16"
    assert p["ImageId"]["Default"] == \
        "/aws/service/debian/release/12/latest/amd64"
    for n in ips:
        r = res[n]
        assert r["CreationPolicy"]["ResourceSignal"]["Count"] == 1
        assert r["Properties"]["MetadataOptions"]["HttpTokens"] == "required"
        assert r["Properties"]["IamInstanceProfile"] == \
            {"Ref": "ServerProfile" if n == "EC2Server" else "ClientProfile"}
    for name in ("ServerRole", "ClientRole"):
        role = res[name]["Properties"]
        assert any("AmazonSSMManagedInstanceCore" in str(a)
                   for a in role["ManagedPolicyArns"])
        assert "cloudformation:SignalResource" in str(role["Policies"])
    # Each role: the one secret, the one parameter; only the server writes.
    assert role_grants(res, "ServerRole") == {
        "secretsmanager:GetSecretValue": ["{'Ref': 'TokenSecret'}"],
        "ssm:PutParameter": ["CaCertParameter"]}
    assert role_grants(res, "ClientRole") == {
        "secretsmanager:GetSecretValue": ["{'Ref': 'TokenSecret'}"],
        "ssm:GetParameter": ["CaCertParameter"]}
    assert "TlsOn" in str(t["Outputs"]["DashboardUrl"]["Value"])
    assert {"CaCertificateCommand", "SensorTokenCommand",
            "TokenSecretArn"} <= set(t["Outputs"])
    assert {"ServerPublicIp", "ServerPrivateIp", "DashboardUrl",
            "LogCommand"} <= set(t["Outputs"])
    for r in res.values():
        assert "DeletionPolicy" not in r and "UpdateReplacePolicy" not in r


def role_grants(res, role):
    """{action: [resource]} of a role's statements, but the signal; a
    parameter ARN given as the parameter's name."""
    out = {}
    for pol in res[role]["Properties"]["Policies"]:
        for st in pol["PolicyDocument"]["Statement"]:
            if "Fn::If" in st:
                st = st["Fn::If"][1]
            if st["Action"] == "cloudformation:SignalResource":
                continue
            r = st["Resource"]
            if "Fn::Sub" in r:
                r = r["Fn::Sub"]
                assert r.startswith("arn:${AWS::Partition}:ssm:"
                                    "${AWS::Region}:${AWS::AccountId}:"
                                    "parameter/"), r
                r = r.rsplit("/", 1)[1].strip("${}")
            out.setdefault(st["Action"], []).append(str(r))
    return out


def max_connection_age_listed():
    server = os.path.join(BUILD, "sensornet-server")
    r = subprocess.run([server, "--help"], capture_output=True, text=True)
    return "--max-connection-age" in r.stdout + r.stderr


def test_scale_topology(spec):
    t = load("scale.yaml")
    res = t["Resources"]
    p = t["Parameters"]
    lb = res["LoadBalancer"]["Properties"]
    assert lb["Type"] == "network"
    assert len(lb["Subnets"]) == 2
    zones = {str(res[s["Ref"]]["Properties"]["AvailabilityZone"])
             for s in lb["Subnets"]}
    assert len(zones) == 2, "two availability zones"
    lis = res["Listener"]["Properties"]
    # TCP, or TLS with the ACM certificate of TlsCertificateArn.
    assert lis["Port"] == 5000
    assert lis["Protocol"] == {"Fn::If": ["TlsOn", "TLS", "TCP"]}
    assert lis["Certificates"]["Fn::If"][1] == \
        [{"CertificateArn": {"Ref": "TlsCertificateArn"}}]
    assert p["TlsCertificateArn"]["Default"] == ""
    assert "TlsNameGiven" in t["Rules"]
    # A TLS listener's idle timeout is 350 s and cannot be set.
    idle = {a["Key"]: a["Value"]
            for a in lis["ListenerAttributes"]["Fn::If"][2]}
    assert int(idle["tcp.idle_timeout.seconds"]) > 30  # client PING period
    tg = res["CollectorTargets"]["Properties"]
    assert tg["Port"] == 5000
    assert tg["Protocol"] == {"Fn::If": ["TlsOn", "TLS", "TCP"]}
    # Health checks: GET /healthz on the HTTP port, not a TCP connect on
    # 5000 (which logged a connection pair in log.txt every 10 s).
    assert tg["HealthCheckProtocol"] == {"Fn::If": ["TlsOn", "HTTPS",
                                                    "HTTP"]}
    assert (tg["HealthCheckPort"], tg["HealthCheckPath"]) == \
        ("8080", "/healthz")
    rules = ingress(t, "CollectorSecurityGroup")
    http = [r for r in rules if isinstance(r, dict) and
            r.get("FromPort") == 8080]
    assert [r["CidrIp"] for r in http] == ["10.0.0.0/16"]
    assert res["TokenSecret"]["Condition"] == "TokensOn"
    assert p["EnableTokens"]["Default"] == "true"
    asg = res["Collectors"]
    assert asg["Type"] == "AWS::AutoScaling::AutoScalingGroup"
    assert len(asg["Properties"]["VPCZoneIdentifier"]) == 2
    assert int(p["CollectorMinSize"]["Default"]) >= 2
    assert asg["Properties"]["TargetGroupARNs"] == \
        [{"Ref": "CollectorTargets"}]
    assert asg["CreationPolicy"]["ResourceSignal"]["Count"] == \
        {"Ref": "CollectorMinSize"}
    assert res["CollectorScaling"]["Properties"]["AutoScalingGroupName"] == \
        {"Ref": "Collectors"}
    db = res["Database"]
    assert db["Properties"]["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in db["Properties"]
    assert db["DeletionPolicy"] == "Delete"
    assert db["UpdateReplacePolicy"] == "Delete"
    assert db["Properties"]["PubliclyAccessible"] is False
    ud = userdata(spec, "scale.yaml")
    col = ud["CollectorLaunchTemplate"]
    assert "--pg-secret 'X_Database_MasterUserSecret_SecretArn'" in col
    assert "--pg-host 'X_Database_Endpoint_Address'" in col
    assert "--http-port 8080 --tls 'auto'" in col
    assert "--token-secret 'X_TokenSecret'" in col
    assert "--token-sensor 'Sensor1,200'" in col
    assert "--token-secret 'X_TokenSecret'" in ud["LoadInstance"]
    assert "--tls-server-name ''" in ud["LoadInstance"]
    role = str(res["CollectorRole"]["Properties"]["Policies"])
    assert "secretsmanager:GetSecretValue" in role
    assert "Database" in role and "MasterUserSecret.SecretArn" in role
    load_ud = ud["LoadInstance"]
    assert "--sensors '200'" in load_ud
    assert "--server 'X_LoadBalancer_DNSName:5000'" in load_ud
    assert res["LoadInstance"]["Condition"] == "HasLoad"
    # The server option that makes sensors rebalance: in the collectors'
    # arguments once the server has it, and documented as pending until.
    with open(os.path.join(ROOT, "docs", "deploy.md")) as f:
        doc = f.read()
    if max_connection_age_listed():
        assert "max-connection-age" in col
    else:
        assert "--max-connection-age" in doc and "pending" in doc


def test_deploy_files_name_no_package_registry():
    """Packages come by name through apt-get and npm, never from a host
    written in these files."""
    files = [os.path.join(ROOT, "docs", "deploy.md")]
    for d in (os.path.join(ROOT, "deploy"),
              os.path.join(ROOT, "tests", "deploy")):
        for base, _, names in os.walk(d):
            files += [os.path.join(base, n) for n in names
                      if not n.endswith(".pyc")]
    for f in files:
        with open(f, errors="replace") as fh:
            text = fh.read()
        assert not re.search(r"registry\.npmjs|registry\.yarnpkg|"
                             r"(deb|security)\.debian\.org|pypi\.org|"
                             r"files\.pythonhosted", text), f


# ---- shell scripts and systemd units ---------------------------------------

def test_shellcheck_scripts():
    need("shellcheck", "shellcheck")
    scripts = [BOOTSTRAP, os.path.join(ROOT, "deploy", "dist.sh"),
               os.path.join(ROOT, "tests", "deploy", "fetch-spec.sh"),
               os.path.join(FAKE_AWS, "aws")]
    r = subprocess.run(["shellcheck"] + scripts, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def units_for_verify(tmp_path, bindir):
    """The units with their programs pointing at files that exist here."""
    for f in os.listdir(UNITS):
        with open(os.path.join(UNITS, f)) as fh:
            text = fh.read()
        text = text.replace("/usr/local/bin/", bindir + "/")
        text = text.replace("/usr/local/lib/sensornet/bootstrap.sh",
                            BOOTSTRAP)
        (tmp_path / f).write_text(text)
    return tmp_path


UNIT_NAMES = ["sensornet-server.service",
              "sensornet-client@temperature.service",
              "sensornet-client@load.service", "sensornet-pgpass.service",
              "sensornet-pgpass.timer"]


@pytest.mark.parametrize("unit", UNIT_NAMES)
def test_systemd_analyze_verify(tmp_path, unit):
    need("systemd-analyze", "systemd")
    for b in ("sensornet-server", "sensornet-client"):
        if not os.access(os.path.join(BUILD, b), os.X_OK):
            skip_or_fail("%s not built" % b)
    d = units_for_verify(tmp_path, BUILD)
    r = subprocess.run(["systemd-analyze", "verify", "--recursive-errors=no",
                        str(d / unit)], capture_output=True, text=True,
                       cwd=str(d))
    assert r.returncode == 0, r.stdout + r.stderr


def test_systemd_analyze_verify_token_dropin(tmp_path):
    """The drop-in bootstrap.sh writes for a sensor with a token
    (LoadCredential=, for the DynamicUser) verifies too, and a misspelt
    key in it would not."""
    need("systemd-analyze", "systemd")
    if not os.access(os.path.join(BUILD, "sensornet-client"), os.X_OK):
        skip_or_fail("sensornet-client not built")
    with open(BOOTSTRAP) as f:
        text = f.read()
    m = re.search(r'"\[Service\]" \\\n\s+"(LoadCredential=token:)', text)
    assert m, "bootstrap.sh writes no LoadCredential drop-in"
    d = units_for_verify(tmp_path, BUILD)
    dropin = d / "sensornet-client@temperature.service.d"
    dropin.mkdir()
    for key, ok in (("LoadCredential", True), ("LoadCredentials", False)):
        (dropin / "token.conf").write_text(
            "[Service]\n%s=token:/etc/sensornet/client-temperature.token\n"
            % key)
        r = subprocess.run(["systemd-analyze", "verify",
                            "--recursive-errors=no",
                            str(d / "sensornet-client@temperature.service")],
                           capture_output=True, text=True, cwd=str(d))
        assert (r.returncode == 0) == ok, (key, r.stdout + r.stderr)


def test_systemd_analyze_verify_fails_on_a_bad_unit(tmp_path):
    """The verify above can fail: a missing program and a bad value."""
    need("systemd-analyze", "systemd")
    d = units_for_verify(tmp_path, "/nonexistent/bin")
    r = subprocess.run(["systemd-analyze", "verify", "--recursive-errors=no",
                        str(d / "sensornet-server.service")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    unit = d / "sensornet-client@.service"
    unit.write_text(unit.read_text().replace("/nonexistent/bin", BUILD)
                    .replace("LimitNOFILE=1048576", "LimitNOFILE=lots"))
    r = subprocess.run(["systemd-analyze", "verify", "--recursive-errors=no",
                        str(d / "sensornet-client@x.service")],
                       capture_output=True, text=True)
    assert r.returncode != 0


def unit_settings(name):
    out = {}
    with open(os.path.join(UNITS, name)) as f:
        for line in f:
            m = re.match(r"^(\w+)=(.*)$", line.strip())
            if m:
                out.setdefault(m.group(1), []).append(m.group(2))
    return out


def test_unit_settings():
    s = unit_settings("sensornet-server.service")
    for k, v in {"Type": "notify", "Restart": "on-failure",
                 "LimitNOFILE": "1048576", "StateDirectory": "sensornet",
                 "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                 "ExecReload": "/bin/kill -HUP $MAINPID",
                 "User": "sensornet"}.items():
        assert s.get(k) == [v], (k, s.get(k))
    assert s["ExecStart"][0].startswith("/usr/local/bin/sensornet-server ")
    c = unit_settings("sensornet-client@.service")
    for k, v in {"Restart": "on-failure", "LimitNOFILE": "1048576",
                 "DynamicUser": "yes", "NoNewPrivileges": "yes",
                 "ProtectSystem": "strict",
                 "EnvironmentFile": "/etc/sensornet/client-%i.conf",
                 "ExecStart": "/usr/local/bin/sensornet-client "
                              "$SENSORNET_CLIENT_ARGS"}.items():
        assert c.get(k) == [v], (k, c.get(k))


# ---- make dist and bootstrap.sh ---------------------------------------------

@pytest.fixture(scope="module")
def work():
    """One source directory for every bootstrap.sh run of this module: the
    first unpacks and builds, the later ones find it done (as a second run
    on one machine does)."""
    d = shared_tmp("sn-work-")
    yield os.path.join(d, "sensornet")
    remove(d)


@pytest.fixture(scope="module")
def dist():
    """A `make dist` tarball of this tree (deploy/dist.mk)."""
    d = tempfile.mkdtemp(prefix="sn-dist-")
    try:
        yield make_dist(d)
    finally:
        remove(d)


def test_make_dist(dist, tmp_path):
    names = subprocess.run(["tar", "-tzf", dist], capture_output=True,
                           text=True, check=True).stdout.split()
    top = {n.split("/")[0] for n in names}
    assert len(top) == 1 and top.pop().startswith("sensornet-")
    rel = {n.split("/", 1)[1] for n in names}
    for f in ("Makefile", "deploy/bootstrap.sh", "deploy/dist.mk",
              "scripts/deps.sh", "src/server/main.c", "deploy/systemd/"
              "sensornet-server.service", "deploy/aws/infraestrutura.yaml"):
        assert f in rel, f
    assert not any(n.startswith("build/") for n in rel)
    # The same tree gives the same bytes.
    r = subprocess.run(["make", "-s", "-f", "deploy/dist.mk", "dist",
                        "BUILD=" + str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    with open(dist, "rb") as a, open(r.stdout.split()[-1], "rb") as b:
        assert a.read() == b.read()


def test_bootstrap_usage():
    r = subprocess.run(["bash", BOOTSTRAP, "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--role server|client" in r.stderr
    r = subprocess.run(["bash", BOOTSTRAP, "--role", "router",
                        "--no-systemd", "--root", "/nonexistent"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    r = subprocess.run(["bash", BOOTSTRAP, "--bogus"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "unknown option" in r.stderr


def test_bootstrap_server_and_client_here(dist, work):
    """Both roles on this host, from the `make dist` tarball, as the
    unprivileged user nobody, with the CloudFormation signals going to a
    fake AWS CLI; then --stop."""
    base = shared_tmp()
    aws_log = os.path.join(base, "aws.log")
    env = fake_aws_env(aws_log)
    port = get_port()
    srv = Host(base, "server", dist, env=env, work=work)
    cli = Host(base, "client", dist, env=env, work=work)
    try:
        srv.bootstrap("--role", "server", "--listen", "127.0.0.1:%d" % port,
                      "--http-port", "0", "--region", "us-east-1",
                      "--cfn-signal", "stack:EC2Server")
        # Installed and configured as the unit would run it.
        assert os.access(os.path.join(srv.prefix, "bin", "sensornet-server"),
                         os.X_OK)
        conf = srv.read("etc", "sensornet", "sensornet-server.conf")
        assert "listen 127.0.0.1:%d\n" % port in conf
        assert "log %s\n" % srv.path("var", "log", "sensornet",
                                     "log.txt") in conf
        pid = srv.pids()["sensornet-server"]
        with open("/proc/%d/status" % pid) as f:
            uid = re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1)
        assert int(uid) == int(subprocess.check_output(
            ["id", "-u", "nobody"]))
        cli.bootstrap("--role", "client", "--server", "127.0.0.1:%d" % port,
                      "--kind", "temperature", "--region", "us-east-1",
                      "--cfn-signal", "stack:EC2Client1")
        assert cli.read("etc", "sensornet", "client-temperature.conf") == \
            "SENSORNET_CLIENT_ARGS=--server 127.0.0.1:%d --kind " \
            "temperature\n" % port
        wait_until(lambda: re.search(
            r"Recebido de \('127\.0\.0\.1', \d+\): Sensor1 - Temperatura: "
            r"-?\d+(\.\d+)?°C", srv.log()), 15, what="a reading in log.txt")
        with open(aws_log) as f:
            calls = f.read().splitlines()
        assert len(calls) == 2, calls
        assert "--logical-resource-id EC2Server" in calls[0]
        assert "--logical-resource-id EC2Client1" in calls[1]
        assert all("--status SUCCESS" in c and "--stack-name stack" in c
                   and "--region us-east-1" in c for c in calls)
        # Again: idempotent (the artifact is not unpacked twice, the
        # service is restarted).
        _, _, err = srv.bootstrap("--role", "server", "--listen",
                                  "127.0.0.1:%d" % port, "--http-port", "0")
        assert "artifact already unpacked" in err
        pids = list(srv.pids().values()) + list(cli.pids().values())
        cli.stop()
        srv.stop()
        for p in pids:
            wait_until(lambda: not pid_alive(p), 30,
                       what="pid %d to exit" % p)
        assert srv.pids() == {} and cli.pids() == {}
    finally:
        cli.stop()
        srv.stop()
        remove(base)


def test_bootstrap_signals_failure(dist, work):
    """A server that cannot start (port taken): bootstrap fails and tells
    CloudFormation FAILURE."""
    base = shared_tmp()
    aws_log = os.path.join(base, "aws.log")
    env = fake_aws_env(aws_log)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    srv = Host(base, "server", dist, env=env, work=work)
    try:
        rc, _, _ = srv.bootstrap("--role", "server", "--listen",
                                 "127.0.0.1:%d" % port, "--http-port", "0",
                                 "--ready-timeout", "10", "--cfn-signal",
                                 "stack:EC2Server", check=False)
        assert rc != 0
        with open(aws_log) as f:
            calls = f.read().splitlines()
        assert len(calls) == 1 and "--status FAILURE" in calls[0], calls
    finally:
        blocker.close()
        srv.stop()
        remove(base)


def test_bootstrap_postgres_from_secret(dist, work, pg):
    """--pg-secret: the password comes from Secrets Manager (the fake CLI
    here) into a libpq passfile only the service user reads, the conninfo
    names it, and the collector stores into PostgreSQL. --refresh-pgpass
    rewrites it (what sensornet-pgpass.timer runs)."""
    base = shared_tmp()
    aws_log = os.path.join(base, "aws.log")
    env = fake_aws_env(aws_log, secret='{"username": "postgres", '
                                       '"password": "p:w\\\\d"}')
    port = get_port()
    srv = Host(base, "collector", dist, env=env, work=work)
    cli = Host(base, "load", dist, env=env, work=work)
    try:
        srv.bootstrap("--role", "server", "--listen", "127.0.0.1:%d" % port,
                      "--http-port", "0", "--pg-secret", "arn:secret",
                      "--pg-host", "127.0.0.1", "--pg-port", str(pg.port),
                      "--pg-db", "sensornet", "--pg-sslmode", "prefer",
                      "--region", "us-east-1")
        passfile = srv.path("etc", "sensornet", "pgpass")
        st = os.stat(passfile)
        assert st.st_mode & 0o777 == 0o600
        assert st.st_uid == int(subprocess.check_output(["id", "-u",
                                                         "nobody"]))
        with open(passfile) as f:
            assert f.read() == \
                "127.0.0.1:%d:sensornet:postgres:p\\:w\\\\d\n" % pg.port
        conf = srv.read("etc", "sensornet", "sensornet-server.conf")
        assert ("postgres host=127.0.0.1 port=%d dbname=sensornet "
                "user=postgres sslmode=prefer connect_timeout=10 "
                "passfile=%s\n" % (pg.port, passfile)) in conf
        assert "\ndb " not in conf
        cli.bootstrap("--role", "client", "--server", "127.0.0.1:%d" % port,
                      "--sensors", "3", "--client-arg", "--interval",
                      "--client-arg", "0.2")
        wait_until(lambda: int(pg.sql("SELECT count(*) FROM readings")) >= 6,
                   20, what="readings in PostgreSQL")
        os.unlink(passfile)
        r = subprocess.run(["bash", BOOTSTRAP, "--refresh-pgpass",
                            "--no-systemd", "--root", srv.root],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        assert os.stat(passfile).st_mode & 0o777 == 0o600
        with open(aws_log) as f:
            calls = f.read().splitlines()
        assert sum("secretsmanager get-secret-value" in c and
                   "--secret-id arn:secret" in c for c in calls) == 2, calls
    finally:
        cli.stop()
        srv.stop()
        remove(base)


# ---- tokens and TLS (issue #8: the deploy turns them on) --------------------

MASTER = "k3yMaterialForTests0123456789abcdefABCDEF0123456789abcdefXYZ0"


def line_exchange(addr, lines, ca=None):
    """Send lines to the sensor port (TLS with ca); the reply lines."""
    import ssl
    s = socket.create_connection(addr, timeout=5)
    if ca:
        s = ssl.create_default_context(cafile=ca).wrap_socket(
            s, server_hostname=addr[0])
    with s:
        f = s.makefile("rb")
        out = []
        for ln in lines:
            s.sendall(ln.encode() + b"\n")
            out.append(f.readline().decode().rstrip("\n"))
        return out


def test_bootstrap_tokens_here(dist, work):
    """Tokens from the master secret: the server's tokens file holds the
    SHA-256 of HMAC-SHA256(master, id) for each listed sensor (ID,N giving
    ID-1 .. ID-N), mode 0640 for the service's group; the master secret
    comes from Secrets Manager (the fake CLI) or a file, the same file
    either way; the collector lets in the listed sensors with their tokens
    and no one else."""
    base = shared_tmp()
    aws_dir = os.path.join(base, "aws")
    os.mkdir(aws_dir)
    with open(os.path.join(aws_dir, "secret-" + fake_key("arn:tokens")),
              "w") as f:
        f.write(MASTER)
    master_file = os.path.join(base, "master")
    with open(master_file, "w") as f:
        f.write(MASTER + "\n")
    aws_log = os.path.join(base, "aws.log")
    env = fake_aws_env(aws_log, aws_dir=aws_dir)
    port = get_port()
    srv = Host(base, "server", dist, env=env, work=work)
    common = ["--role", "server", "--listen", "127.0.0.1:%d" % port,
              "--http-port", "0", "--token-sensor", "Sensor1",
              "--token-sensor", "Load,3", "--tls", ""]
    try:
        srv.bootstrap(*(common + ["--token-secret", "arn:tokens",
                                  "--region", "us-east-1"]))
        tokens = srv.path("etc", "sensornet", "tokens")
        st = os.stat(tokens)
        assert st.st_mode & 0o777 == 0o640
        assert st.st_gid == int(subprocess.check_output(
            ["id", "-g", "nobody"]))
        with open(tokens) as f:
            text = f.read()
        entries = [ln.split() for ln in text.splitlines()
                   if ln and not ln.startswith("#")]
        import hashlib
        want = [[i, "sha256:" + hashlib.sha256(
            sensor_token(MASTER, i).encode()).hexdigest()]
            for i in ("Sensor1", "Load-1", "Load-2", "Load-3")]
        assert entries == want
        assert MASTER not in text and sensor_token(MASTER, "Sensor1") \
            not in text
        # The token docs/deploy.md's command computes is the same.
        doc_cmd = subprocess.run(
            ["openssl", "dgst", "-sha256", "-r", "-hmac", MASTER],
            input="Sensor1", capture_output=True, text=True, check=True)
        assert doc_cmd.stdout.split()[0] == sensor_token(MASTER, "Sensor1")
        conf = srv.read("etc", "sensornet", "sensornet-server.conf")
        assert "tokens %s\n" % tokens in conf
        assert "tls-cert" not in conf
        with open(aws_log) as f:
            assert "secretsmanager get-secret-value --region us-east-1 " \
                "--secret-id arn:tokens" in f.read()
        addr = ("127.0.0.1", port)
        good = sensor_token(MASTER, "Load-2")
        assert line_exchange(addr, ["AUTH Load-2 " + good]) == ["AUTH OK"]
        assert line_exchange(addr, ["AUTH Load-2 " + good[:-1] + "0"]) \
            == ["AUTH ERR bad credentials"]
        # Not listed: its own HMAC does not let it in.
        assert line_exchange(
            addr, ["AUTH Sensor2 " + sensor_token(MASTER, "Sensor2")]) \
            == ["AUTH ERR bad credentials"]
        # The offline form gives the same file.
        srv.bootstrap(*(common + ["--token-secret-file", master_file]))
        with open(tokens) as f:
            assert f.read() == text
    finally:
        srv.stop()
        remove(base)


def test_bootstrap_tls_and_tokens_here(dist, work):
    """--tls auto: the server makes a CA and a certificate for its
    addresses on the first run and keeps them on the next, speaks only TLS
    (sensor port and HTTPS /healthz), publishes the CA certificate to the
    SSM parameter; the client waits for it there, computes its token and
    its readings reach log.txt."""
    why = tls_support(BUILD)
    if why:
        skip_or_fail(why)
    import ssl
    import urllib.error
    import urllib.request
    base = shared_tmp()
    aws_dir = os.path.join(base, "aws")
    os.mkdir(aws_dir)
    param = os.path.join(aws_dir, "param-" + fake_key("/sensornet/ca"))
    with open(param, "w") as f:
        f.write("pending")
    master_file = os.path.join(base, "master")
    with open(master_file, "w") as f:
        f.write(MASTER)
    env = fake_aws_env(os.path.join(base, "aws.log"), aws_dir=aws_dir)
    port, http = get_port(), get_port()
    srv = Host(base, "server", dist, env=env, work=work)
    cli = Host(base, "client", dist, env=env, work=work)
    sargs = ["--role", "server", "--listen", "127.0.0.1:%d" % port,
             "--http-port", str(http), "--tls", "auto",
             "--tls-publish-ssm", "/sensornet/ca", "--token-secret-file",
             master_file, "--token-sensor", "Sensor1"]
    try:
        srv.bootstrap(*sargs)
        tls = srv.path("etc", "sensornet", "tls")
        ca = os.path.join(tls, "ca.crt")
        with open(ca) as f:
            ca_pem = f.read()
        with open(param) as f:
            assert f.read().strip() == ca_pem.strip()
        assert os.stat(os.path.join(tls, "server.key")).st_mode & 0o777 \
            == 0o640
        assert os.stat(os.path.join(tls, "ca.key")).st_mode & 0o777 == 0o600
        san = subprocess.run(["openssl", "x509", "-noout", "-ext",
                              "subjectAltName", "-in",
                              os.path.join(tls, "server.crt")],
                             capture_output=True, text=True).stdout
        assert "IP Address:127.0.0.1" in san, san
        conf = srv.read("etc", "sensornet", "sensornet-server.conf")
        assert "tls-cert %s/server.crt\n" % tls in conf
        # The client waits for the CA while the parameter is "pending", as
        # when it boots before the server; the server's second run (the CA
        # and the certificate kept) publishes it again.
        with open(param, "w") as f:
            f.write("pending")
        cp = cli.start("--role", "client", "--server", "127.0.0.1:%d" % port,
                       "--tls", "auto", "--tls-ca-ssm", "/sensornet/ca",
                       "--token-secret-file", master_file,
                       "--ready-timeout", "120")
        aws_log = os.path.join(base, "aws.log")

        def polling():
            with open(aws_log) as f:
                return "ssm get-parameter" in f.read()
        wait_until(polling, 120, what="the client polling the parameter")
        _, _, err = srv.bootstrap(*sargs)
        assert "TLS: keeping" in err
        with open(ca) as f:
            assert f.read() == ca_pem
        Host.finish(cp, "client")
        args = cli.read("etc", "sensornet", "client-temperature.conf")
        assert "--tls --tls-ca %s" % cli.path("etc", "sensornet", "ca.crt") \
            in args
        tokf = cli.path("etc", "sensornet", "client-temperature.token")
        assert "--token-file %s" % tokf in args
        with open(tokf) as f:
            assert f.read().strip() == sensor_token(MASTER, "Sensor1")
        assert os.stat(tokf).st_mode & 0o777 == 0o600
        wait_until(lambda: re.search(
            r"Recebido de \('127\.0\.0\.1', \d+\): Sensor1 - Temperatura: ",
            srv.log()), 20, what="a reading over TLS in log.txt")
        # Only TLS on the sensor port; HTTPS /healthz for the NLB.
        assert line_exchange(("127.0.0.1", port), ["PING"], ca=ca) == \
            ["PONG"]
        # Plain text on the TLS port: one clear line, then closed.
        assert line_exchange(("127.0.0.1", port), ["PING"]) == \
            ["ERR tls required"]
        ctx = ssl.create_default_context(cafile=ca)

        def healthz():
            try:
                with urllib.request.urlopen(
                        "https://127.0.0.1:%d/healthz" % http, context=ctx,
                        timeout=5) as r:
                    return r.status
            except urllib.error.URLError:
                return None
        wait_until(lambda: healthz() == 200, 10,
                   what="HTTPS /healthz: %s" % srv.out("sensornet-server"))
    finally:
        cli.stop()
        srv.stop()
        remove(base)
