// lib/native.ts declares the binding by hand; this holds it to what the binding is. Every function and class the
// addon exports, and every method of its classes, is declared there and the other way round; and every call's options
// object has exactly the fields the binding reads (its declare() lists, native/binding/args.h), read from native.ts's
// types with the TypeScript compiler.
import * as path from 'path';
import * as ts from 'typescript';
import { native } from '../lib/native';

const source = path.join(__dirname, '../lib/native.ts');
const program = ts.createProgram([source], { strict: true, target: ts.ScriptTarget.ES2020 });
const checker = program.getTypeChecker();
const file = program.getSourceFile(source)!;

/** The declared interface or type `name` of native.ts. */
function declared(name: string): ts.Type {
  let found: ts.Node | undefined;
  ts.forEachChild(file, (n) => {
    if ((ts.isInterfaceDeclaration(n) || ts.isTypeAliasDeclaration(n)) && n.name.text === name) found = n;
  });
  if (!found) throw new Error(`native.ts declares no ${name}`);
  return checker.getTypeAtLocation(found);
}

/** The methods of a type, with the fields of each one's options object (null: no argument). */
function methods(type: ts.Type): Map<string, string[] | null> {
  const out = new Map<string, string[] | null>();
  for (const prop of type.getProperties()) {
    const t = checker.getTypeOfSymbolAtLocation(prop, file);
    const signatures = [...t.getCallSignatures(), ...t.getConstructSignatures()];
    if (signatures.length === 0) continue;
    const fields = new Set<string>();
    let any = false;
    for (const sig of signatures) {
      const first = sig.getParameters()[0];
      if (!first) continue;
      any = true;
      const pt = checker.getTypeOfSymbolAtLocation(first, file);
      for (const f of checker.getApparentType(pt).getProperties()) fields.add(f.name);
    }
    out.set(prop.name, any ? [...fields].sort() : null);
  }
  return out;
}

const binding = native() as unknown as Record<string, unknown>;
const signatures = native().signatures();
const readers = (call: string) => [...signatures[call]].sort();

describe('lib/native.ts against the binding', () => {
  it('declares every export of the addon, and nothing it lacks', () => {
    const declaredTop = methods(declared('NativeBinding'));
    const exported = Object.keys(binding).filter((k) => typeof binding[k] === 'function');
    expect([...declaredTop.keys()].sort()).toEqual(exported.sort());
  });

  it.each([
    ['NativeLayer', 'NativeLayer'],
    ['NativeReadProbe', 'NativeReadProbe'],
    ['NativeExperts', 'NativeExperts'],
    ['NativeExpertCache', 'NativeExpertCache'],
  ])("declares %s's methods as the class has them", (exportName, typeName) => {
    const proto = (binding[exportName] as { prototype: object }).prototype;
    const own = Object.getOwnPropertyNames(proto).filter((k) => k !== 'constructor');
    expect([...methods(declared(typeName)).keys()].sort()).toEqual(own.sort());
  });

  it("gives every call's options object exactly the fields the binding reads", () => {
    const calls: [string, Map<string, string[] | null>][] = [
      ['', methods(declared('NativeBinding'))],
      ['NativeLayer.', methods(declared('NativeLayer'))],
      ['NativeReadProbe.', methods(declared('NativeReadProbe'))],
    ];
    const checked = new Set<string>();
    for (const [prefix, table] of calls)
      for (const [name, fields] of table) {
        const call = prefix + name;
        if (!(call in signatures)) continue; // a call without options, or a constructor taking a spec (spec.cpp reads it)
        expect({ call, fields }).toEqual({ call, fields: readers(call) });
        checked.add(call);
      }
    // the constructor of the read probe takes { bytes }
    const probe = methods(declared('NativeBinding')).get('NativeReadProbe');
    expect(probe).toEqual(readers('new NativeReadProbe'));
    checked.add('new NativeReadProbe');
    // and that of the expert cache { bytes, policy, ioThreads, halfLife }
    expect(methods(declared('NativeBinding')).get('NativeExpertCache')).toEqual(readers('new NativeExpertCache'));
    checked.add('new NativeExpertCache');
    // and every call the binding declares is one native.ts has
    expect([...checked].sort()).toEqual(Object.keys(signatures).sort());
  });

  it('refuses positional arguments where an options object belongs, in the one format', () => {
    expect(() => (native().dispatch as unknown as (...a: unknown[]) => unknown)(new Int32Array(2), 4)).toThrow(
      /^moe-kernels: expected the options of dispatch to be an object but got another typed array$/,
    );
  });
});
