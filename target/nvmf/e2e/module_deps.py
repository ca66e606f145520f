"""Prints the kernel module files (relative to an unpacked linux-image package) needed to load
the modules named on the command line, dependencies first."""
import os,re,sys
import glob
root=glob.glob('lib/modules/*/kernel')[0]
idx={}
for d,_,fs in os.walk(root):
    for f in fs:
        if f.endswith('.ko'):
            idx[f[:-3].replace('-','_')]=os.path.join(d,f)
def deps(name):
    data=open(idx[name],'rb').read()
    m=re.search(rb'depends=([^\0]*)\0',data)
    return [x.replace('-','_') for x in m.group(1).decode().split(',') if x] if m else []
order=[]
def visit(n):
    if n in order: return
    for d in deps(n): visit(d)
    order.append(n)
for n in sys.argv[1:]: visit(n)
for n in order: print(idx[n])
