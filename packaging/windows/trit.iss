; Inno Setup 6 script for Trit's Windows installer. packaging/build.py runs it after PyInstaller:
;   iscc /DAppVersion=0.1.0 /DSourceDir=...\dist\trit /DOutputDir=... /DIconFile=...\trit.ico trit.iss
; Per-user install by default (no administrator rights needed; the user may choose all users),
; Start menu and optional desktop shortcuts to the windowed Trit.exe, an uninstaller that leaves
; the user's conversations and downloaded models alone (they live in %LOCALAPPDATA%\Trit).

#ifndef AppVersion
  #error Pass /DAppVersion=...
#endif
#ifndef SourceDir
  #error Pass /DSourceDir=... (PyInstaller's dist\trit folder)
#endif
#ifndef OutputDir
  #define OutputDir "."
#endif

[Setup]
AppId={{6B1E4F2A-9C3D-4E7B-8A15-2D0F3C9B7E41}
AppName=Trit
AppVersion={#AppVersion}
AppPublisher=Trit developers
DefaultDirName={autopf}\Trit
DefaultGroupName=Trit
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir={#OutputDir}
OutputBaseFilename=Trit-{#AppVersion}-windows-x64-setup
#ifdef IconFile
SetupIconFile={#IconFile}
#endif
UninstallDisplayIcon={app}\Trit.exe
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\Trit"; Filename: "{app}\Trit.exe"
Name: "{autodesktop}\Trit"; Filename: "{app}\Trit.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\Trit.exe"; Description: "{cm:LaunchProgram,Trit}"; Flags: nowait postinstall skipifsilent
