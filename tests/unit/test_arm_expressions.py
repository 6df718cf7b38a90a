"""The ARM expression language: every supported function, escaping, access, and error messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from emulator.arm.expressions import (
    MAX_EXPRESSION_DEPTH,
    Call,
    DeploymentScope,
    EvalContext,
    ExpressionError,
    Index,
    Literal,
    Member,
    arm_guid,
    evaluate_expression,
    evaluate_value,
    iter_function_names,
    parse_expression,
    unique_string,
)
from emulator.errors import TemplateError

SUB = "00000000-0000-0000-0000-000000000000"
RG_ID = f"/subscriptions/{SUB}/resourceGroups/appgw-emulator"
NOW = datetime(2024, 3, 5, 7, 8, 9, 123456, tzinfo=UTC)


def make_ctx(**overrides: Any) -> EvalContext:
    values: dict[str, Any] = {
        "parameters": {
            "name": "gw1",
            "count": 3,
            "tags": {"env": "dev", "Owner": "me"},
            "list": ["a", "b", "c"],
            "flag": True,
        },
        "variables": {
            "gwName": "[concat('app-', parameters('name'))]",
            "gwId": "[resourceId('Microsoft.Network/applicationGateways', variables('gwName'))]",
            "obj": {"inner": "[parameters('name')]", "arr": ["[add(1, 2)]"]},
            "literal": "[[not an expression]",
        },
        "now": NOW,
        "deployment_name": "deploymentTemplate",
    }
    values.update(overrides)
    return EvalContext(**values)


def ev(text: str, ctx: EvalContext | None = None) -> Any:
    return evaluate_expression(text, ctx or make_ctx())


CASES: list[tuple[str, Any]] = [
    # literals and access
    ("['abc']", "abc"),
    ("['it''s']", "it's"),
    ("[-5]", -5),
    ("[true()]", True),
    ("[false]", False),
    ("[null()]", None),
    ("[createObject('a', createArray(1, 2))['a'][1]]", 2),
    ("[createObject('Key', 'v').key]", "v"),
    ("[resourceGroup().location]", "westeurope"),
    ("[resourceGroup().properties.provisioningState]", "Succeeded"),
    ("[parameters('tags')['env']]", "dev"),
    ("[parameters('TAGS').owner]", "me"),
    # deployment values
    ("[parameters('name')]", "gw1"),
    ("[PARAMETERS('Name')]", "gw1"),
    ("[variables('gwName')]", "app-gw1"),
    ("[variables('obj').inner]", "gw1"),
    ("[variables('obj').arr[0]]", 3),
    ("[variables('literal')]", "[not an expression]"),
    ("[resourceGroup().id]", RG_ID),
    ("[resourceGroup().name]", "appgw-emulator"),
    ("[subscription().subscriptionId]", SUB),
    ("[subscription().id]", f"/subscriptions/{SUB}"),
    ("[subscription().tenantId]", SUB),
    ("[deployment().name]", "deploymentTemplate"),
    (
        "[variables('gwId')]",
        f"{RG_ID}/providers/Microsoft.Network/applicationGateways/app-gw1",
    ),
    (
        "[resourceId('Microsoft.Network/applicationGateways/sslProfiles', 'gw', 'p1')]",
        f"{RG_ID}/providers/Microsoft.Network/applicationGateways/gw/sslProfiles/p1",
    ),
    (
        "[resourceId('other-rg', 'Microsoft.Network/publicIPAddresses', 'pip')]",
        f"/subscriptions/{SUB}/resourceGroups/other-rg/providers/Microsoft.Network/"
        "publicIPAddresses/pip",
    ),
    (
        "[resourceId('1111', 'rg2', 'Microsoft.Network/virtualNetworks/subnets', 'v', 's')]",
        "/subscriptions/1111/resourceGroups/rg2/providers/Microsoft.Network/virtualNetworks/v/"
        "subnets/s",
    ),
    (
        "[resourceId('Microsoft.Network/virtualNetworks/subnets', 'v/s')]",
        f"{RG_ID}/providers/Microsoft.Network/virtualNetworks/v/subnets/s",
    ),
    (
        "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'r1')]",
        f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/r1",
    ),
    (
        "[tenantResourceId('Microsoft.Authorization/policyDefinitions', 'p')]",
        "/providers/Microsoft.Authorization/policyDefinitions/p",
    ),
    (
        "[extensionResourceId('/x/y', 'Microsoft.Authorization/locks', 'l')]",
        "/x/y/providers/Microsoft.Authorization/locks/l",
    ),
    # strings
    ("[concat('a', 'b', 1, true)]", "ab1True"),
    ("[concat(createArray(1), createArray(2, 3))]", [1, 2, 3]),
    ("[format('{0}-{1}', 'a', 'b')]", "a-b"),
    ("[format('{0:D3}|{1,4}|{1,-4}|{{x}}', 7, 'ab')]", "007|  ab|ab  |{x}"),
    ("[format('{0:N0} {0:X}', 1234)]", "1,234 4D2"),
    ("[toLower('AbC')]", "abc"),
    ("[toUpper('AbC')]", "ABC"),
    ("[trim('  x ')]", "x"),
    ("[replace('a-b-c', '-', '/')]", "a/b/c"),
    ("[split('a,b;c', createArray(',', ';'))]", ["a", "b", "c"]),
    ("[split('a/b', '/')]", ["a", "b"]),
    ("[join(createArray('a', 1), '+')]", "a+1"),
    ("[startsWith('HelloWorld', 'hello')]", True),
    ("[endsWith('HelloWorld', 'WORLD')]", True),
    ("[indexOf('HelloWorld', 'WORLD')]", 5),
    ("[indexOf('abc', 'z')]", -1),
    ("[lastIndexOf('abcabc', 'B')]", 4),
    ("[indexOf(createArray('a', 'b'), 'b')]", 1),
    ("[substring('abcdef', 2, 3)]", "cde"),
    ("[substring('abcdef', 4)]", "ef"),
    ("[padLeft('7', 3, '0')]", "007"),
    ("[padLeft(12, 4)]", "  12"),
    ("[string(createObject('a', 1, 'b', createArray(true)))]", '{"a":1,"b":[true]}'),
    ("[string(false)]", "False"),
    ("[string(42)]", "42"),
    ("[base64('hello')]", "aGVsbG8="),
    ("[base64ToString('aGVsbG8=')]", "hello"),
    ("[uriComponent('a b/c')]", "a%20b%2Fc"),
    ("[uriComponentToString('a%20b')]", "a b"),
    ("[uri('https://example.com/a/', 'b.json')]", "https://example.com/a/b.json"),
    # conversions
    ("[int('42')]", 42),
    ("[int(-3)]", -3),
    ("[bool('TRUE')]", True),
    ("[bool(0)]", False),
    ("[json('{\"a\": [1, null]}')]", {"a": [1, None]}),
    ("[json('null')]", None),
    ("[array('x')]", ["x"]),
    # logic
    ("[if(equals(parameters('count'), 3), 'yes', 'no')]", "yes"),
    ("[if(false(), reference('never-evaluated'), 'else')]", "else"),
    ("[equals('a', 'A')]", False),
    ("[equals(1, true())]", False),
    ("[equals(createArray(1, 'x'), createArray(1, 'x'))]", True),
    ("[not(parameters('flag'))]", False),
    ("[and(true(), true(), false())]", False),
    ("[or(false(), true())]", True),
    ("[less(1, 2)]", True),
    ("[less('A', 'a')]", True),
    ("[greater(2, 2)]", False),
    ("[lessOrEquals(2, 2)]", True),
    ("[greaterOrEquals('b', 'a')]", True),
    ("[coalesce(null(), null(), 'x')]", "x"),
    ("[coalesce(null())]", None),
    # collections
    ("[createArray()]", []),
    (
        "[union(createObject('a', 1, 'n', createObject('x', 1)), "
        "createObject('a', 2, 'n', createObject('y', 2)))]",
        {"a": 2, "n": {"x": 1, "y": 2}},
    ),
    ("[union(createArray(1, 2), createArray(2, 3))]", [1, 2, 3]),
    ("[intersection(createArray(1, 2, 3), createArray(3, 2))]", [2, 3]),
    ("[length(parameters('list'))]", 3),
    ("[length('abcd')]", 4),
    ("[length(parameters('tags'))]", 2),
    ("[contains(parameters('list'), 'b')]", True),
    ("[contains('OneTwo', 'two')]", False),
    ("[contains(parameters('tags'), 'ENV')]", True),
    ("[empty('')]", True),
    ("[empty(createObject())]", True),
    ("[empty(null())]", True),
    ("[empty(parameters('list'))]", False),
    ("[first(parameters('list'))]", "a"),
    ("[last('xyz')]", "z"),
    ("[first(createArray())]", None),
    ("[skip(parameters('list'), 1)]", ["b", "c"]),
    ("[take('abcdef', 2)]", "ab"),
    ("[range(5, 3)]", [5, 6, 7]),
    # numbers
    ("[add(1, 2)]", 3),
    ("[sub(1, 5)]", -4),
    ("[mul(4, -2)]", -8),
    ("[div(7, 2)]", 3),
    ("[div(-7, 2)]", -3),
    ("[mod(-7, 2)]", -1),
    ("[min(3, 1, 2)]", 1),
    ("[max(createArray(3, 9, 2))]", 9),
    # hashes (determinism and shape)
    ("[length(uniqueString(resourceGroup().id))]", 13),
    ("[guid('a', 'b', 'c')]", arm_guid("a", "b", "c")),
]


@pytest.mark.parametrize(("expression", "expected"), CASES)
def test_function_evaluates_like_arm(expression: str, expected: Any) -> None:
    assert ev(expression) == expected


# Reference values that Bicep/ARM's uniqueString() returns for these inputs (published alongside
# community ports of the function), so ours is the same hash, not merely a deterministic one.
@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("test",), "rbgf3xv4ufgzg"),
        (("hello", "world"), "a7wkljktk6wne"),
        (("abc",), "cgtzqvhu4i23s"),
        ((f"/subscriptions/{SUB}/resourceGroups/my-rg",), "bmg7c6xu4tw46"),
        (("foo", "bar", "baz"), "xzi4ioaxtmth4"),
    ],
)
def test_unique_string_matches_azure_outputs(parts: tuple[str, ...], expected: str) -> None:
    assert unique_string(*parts) == expected
    args = ", ".join(f"'{p}'" for p in parts)
    assert ev(f"[uniqueString({args})]") == expected


def test_guid_is_name_based_uuid_over_hyphen_joined_arguments() -> None:
    value = ev("[guid('x', 'y')]")
    assert value == arm_guid("x-y")
    assert value[14] == "5"  # version 5: SHA-1 name-based


def test_parser_builds_member_and_index_nodes_with_positions() -> None:
    tree = parse_expression("[f('a')[0].b]")
    assert isinstance(tree, Member)
    assert tree.name == "b"
    assert isinstance(tree.target, Index)
    assert tree.target.index == Literal(0, 8)
    assert tree.target.target == Call("f", (Literal("a", 3),), 1)


def test_evaluate_value_walks_nested_json_and_unescapes_double_bracket() -> None:
    value = {
        "id": "[concat('/x/', parameters('name'))]",
        "list": ["[[literal]", "plain [text]", 5, None, "[add(2, 3)]"],
        "nested": {"deep": "[variables('gwName')]"},
    }
    assert evaluate_value(value, make_ctx(), "resources[0]") == {
        "id": "/x/gw1",
        "list": ["[literal]", "plain [text]", 5, None, 5],
        "nested": {"deep": "app-gw1"},
    }


def test_property_copy_loop_expands_into_an_array() -> None:
    value = {
        "copy": [
            {
                "name": "frontendPorts",
                "count": "[parameters('count')]",
                "input": {
                    "name": "[concat('port', copyIndex('frontendPorts'))]",
                    "properties": {"port": "[add(8000, copyIndex('frontendPorts', 1))]"},
                },
            }
        ],
        "other": "kept",
    }
    out = evaluate_value(value, make_ctx(), "properties")
    assert out == {
        "frontendPorts": [
            {"name": "port0", "properties": {"port": 8001}},
            {"name": "port1", "properties": {"port": 8002}},
            {"name": "port2", "properties": {"port": 8003}},
        ],
        "other": "kept",
    }


def test_variable_copy_loop_defines_an_array_variable() -> None:
    variables = {
        "copy": [{"name": "names", "count": 2, "input": "[concat('n', copyIndex('names'))]"}]
    }
    assert ev("[variables('names')]", make_ctx(variables=variables)) == ["n0", "n1"]


def test_variables_are_evaluated_once_and_lazily() -> None:
    ctx = make_ctx(variables={"bad": "[reference('x')]", "good": "[parameters('name')]"})
    assert ev("[variables('good')]", ctx) == "gw1"
    assert ctx.variable_cache.values == {"good": "gw1"}


def test_scope_overrides_resource_group_and_subscription() -> None:
    scope = DeploymentScope(subscription_id="sub-1", resource_group="rg-1", location="eastus")
    ctx = make_ctx(scope=scope)
    assert ev("[resourceGroup().id]", ctx) == "/subscriptions/sub-1/resourceGroups/rg-1"
    assert ev("[resourceGroup().location]", ctx) == "eastus"


def test_utc_now_reads_the_context_time_in_parameter_defaults() -> None:
    ctx = make_ctx(allow_utc_now=True)
    assert ev("[utcNow()]", ctx) == "20240305T070809Z"
    assert ev("[utcNow('u')]", ctx) == "2024-03-05 07:08:09Z"
    assert ev("[utcNow('yyyy-MM-dd')]", ctx) == "2024-03-05"


def test_utc_now_outside_parameter_defaults_is_rejected_like_arm() -> None:
    with pytest.raises(ExpressionError, match="only be used with parameter default value"):
        ev("[utcNow()]")


# --- errors ---------------------------------------------------------------------------------


ERRORS: list[tuple[str, str]] = [
    ("[reference('x').id]", r"'reference' reads a deployed Azure resource.*position 2"),
    ("[concat('a', listKeys('x', '1').keys)]", r"'listKeys'.*position 14"),
    ("[frobnicate(1)]", r"template function 'frobnicate' is not valid.*position 2"),
    ("[newGuid()]", r"'newGuid' is valid in Azure but not supported"),
    ("[ns.myFn(1)]", r"User-defined template function 'ns.myFn'"),
    ("[concat('a', toLower())]", r"'toLower': expects 1 argument\(s\) but got 0.*position 14"),
    ("[substring('abc', 2, 5)]", r"'substring'.*within the string"),
    ("[add('1', 2)]", r"'add': argument 1 must be of type 'Integer' but is of type 'String'"),
    ("[if(1, 'a', 'b')]", r"'if': argument 1 must be of type 'Boolean'"),
    ("[parameters('missing')]", r"template parameter 'missing' is not found"),
    ("[variables('missing')]", r"template variable 'missing' is not found"),
    ("[resourceGroup().nope]", r"property 'nope' doesn't exist, available properties are"),
    ("[parameters('list')[3]]", r"array index '3' is out of bounds"),
    ("[resourceId('Microsoft.Network/applicationGateways/sslProfiles', 'gw')]",
     r"requires 2 resource name argument\(s\), got 1"),
    ("[resourceId('gw')]", r"expects at least 2 argument"),
    ("[div(1, 0)]", r"division by zero"),
    ("[copyIndex()]", r"only valid inside a copy loop"),
    ("[concat('a]", r"unterminated string literal at position 9"),
    ("[concat('a', 'b']", r"expected '\)' but found the end of the expression"),
    ("[concat('a') 'b']", r"unexpected 'b' after the expression at position 14"),
    ("[concat('a' # 'b')]", r"unexpected character '#' at position 13"),
    ("[1.5]", r"only integer numbers are allowed"),
    ("[]", r"empty expression"),
    ("[json('{')]", r"'json': the argument is not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("expression", "pattern"), ERRORS)
def test_invalid_expression_raises_error_naming_function_and_position(
    expression: str, pattern: str
) -> None:
    with pytest.raises(ExpressionError, match=pattern) as info:
        ev(expression)
    assert info.value.error_code == "InvalidTemplate"
    assert isinstance(info.value, TemplateError)


def test_live_function_error_suggests_a_parameter() -> None:
    with pytest.raises(ExpressionError) as info:
        ev("[reference('pip').ipAddress]")
    assert info.value.fix is not None
    assert "replace it with a parameter" in info.value.fix
    assert "[reference('pip').ipAddress]" in info.value.message


def test_variable_cycle_is_reported() -> None:
    ctx = make_ctx(variables={"a": "[variables('b')]", "b": "[variables('a')]"})
    with pytest.raises(ExpressionError, match=r"cycle: a -> b -> a"):
        ev("[variables('a')]", ctx)


def test_evaluate_value_locates_the_error_at_the_innermost_json_path() -> None:
    ctx = make_ctx(
        variables={"broken": "[reference('x')]", "wrapper": "[variables('broken')]"},
        file="t.json",
    )
    with pytest.raises(ExpressionError) as info:
        evaluate_value({"a": [{"id": "[variables('wrapper')]"}]}, ctx, "resources[2]")
    assert info.value.file == "t.json"
    assert info.value.path == "variables.broken"

    with pytest.raises(ExpressionError) as info:
        evaluate_value({"a": [{"id": "[bogus()]"}]}, ctx, "resources[2]")
    assert info.value.path == "resources[2].a[0].id"
    assert str(info.value).startswith("t.json: resources[2].a[0].id: ")


def test_every_function_the_gateway_templates_need_is_implemented() -> None:
    needed = [
        "parameters",
        "variables",
        "concat",
        "format",
        "resourceId",
        "subscriptionResourceId",
        "resourceGroup",
        "subscription",
        "deployment",
        "uniqueString",
        "guid",
        "toLower",
        "toUpper",
        "if",
        "equals",
        "not",
        "and",
        "or",
        "less",
        "greater",
        "lessOrEquals",
        "greaterOrEquals",
        "string",
        "int",
        "bool",
        "json",
        "base64",
        "base64ToString",
        "createArray",
        "createObject",
        "union",
        "length",
        "replace",
        "split",
        "join",
        "contains",
        "empty",
        "first",
        "last",
        "substring",
        "trim",
        "startsWith",
        "endsWith",
        "coalesce",
        "add",
        "sub",
        "mul",
        "div",
        "mod",
        "min",
        "max",
        "range",
        "skip",
        "take",
        "indexOf",
        "padLeft",
        "uri",
        "utcNow",
        "copyIndex",
        "true",
        "false",
        "null",
    ]
    assert {name.lower() for name in needed} <= set(iter_function_names())


# --- bounds on hostile expressions (issue #15) --------------------------------------------------


def _nested(depth: int) -> str:
    return "[" + "concat(" * depth + "'a'" + ")" * depth + "]"


def test_nesting_up_to_the_bound_evaluates() -> None:
    assert ev(_nested(MAX_EXPRESSION_DEPTH - 1)) == "a"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (_nested(65), "nests deeper than 64 levels"),
        (_nested(5000)[:24_000] + "]", "nests deeper than 64 levels"),
        ("[concat('" + "a" * 24_600 + "')]", "at most 24,576"),
        ("[padLeft('a', 1500000000)]", "at most 4,194,304"),
        ("[replace(padLeft('a', 4000000, 'a'), 'a', 'aa')]", "at most 4,194,304"),
        ("[format('{0,2000000000}', 1)]", "at most 4,194,304"),
        ("[format('{0:D2000000000}', 1)]", "at most 4,194,304"),
        ("[join(createArray(padLeft('a', 3000000), padLeft('a', 3000000)), ',')]", "at most"),
        ("[add(9223372036854775807, 1)]", "64-bit"),
        ("[mul(-9223372036854775808, -1)]", "64-bit"),
        ("[add(92233720368547758070, 1)]", "64 bits"),
        ("[add(" + "9" * 5000 + ", 1)]", "64 bits"),
        ("[json('" + "[" * 100 + "]" * 100 + "')]", "nest deeper than 64 levels"),
    ],
    ids=[
        "depth-65",
        "depth-5000",
        "too-long",
        "padleft",
        "replace",
        "format-alignment",
        "format-width",
        "join",
        "add-overflow",
        "mul-overflow",
        "literal-too-big",
        "literal-5000-digits",
        "json-too-deep",
    ],
)
def test_hostile_expression_is_an_expression_error(text: str, words: str) -> None:
    with pytest.raises(ExpressionError) as info:
        ev(text)
    assert words in info.value.message
