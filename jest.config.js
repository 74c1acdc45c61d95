/**
 * Jest runs the sidebar's model tests (labextension/src/__tests__) with ts-jest, in Node:
 * the model depends only on @lumino packages and an injected request function.
 */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/labextension/src'],
  testMatch: ['**/__tests__/**/*.spec.ts'],
  transform: {
    '^.+\\.tsx?$': [
      'ts-jest',
      {
        tsconfig: {
          esModuleInterop: true,
          jsx: 'react',
          lib: ['DOM', 'ES2020'],
          module: 'commonjs',
          skipLibCheck: true,
          strict: true,
          target: 'ES2018',
          types: ['jest']
        }
      }
    ]
  }
};
